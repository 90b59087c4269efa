"""Pseudo-Label (Lee, ICML 2013 workshop), as TorchSSL and Oliver et al. (NeurIPS 2018) run it: the model's own
confident prediction for an unlabeled image is used as that image's label.

For a labeled batch x of size B and an unlabeled batch u of size μB, both weakly augmented (flip + crop):

    ℓ_s = CE(labels, f(x))
    p   = softmax(f(u))                       treated as a constant (no gradient)
    ℓ_u = 1/(μB) · Σ 1[max p ≥ τ] · CE(argmax p, f(u))
    ℓ   = ℓ_s + λ(t) ℓ_u,   λ(t) = λ · min(1, t / (w·K))

The same forward pass gives the pseudo-label and the prediction it trains. Lee's paper uses every pseudo-label
(τ = 0) and raises λ(t) over epochs; τ = 0.95 and the linear ramp over the first w = 40 % of the K iterations
are TorchSSL's defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from implementations.interface import TrainConfig
from implementations.own.step_loss import (
    StepInputs,
    StepLoss,
    fixed_class_thresholds,
    labeled_loss_words,
    ramp_words,
    unlabeled_batch_words,
)

VIEWS = ("weak",)

# How Pseudo-Label differs from the other methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "the argmax of the prediction on the same view (a hard pseudo-label)",
    "views of an unlabeled image": "one weak view (target and trained)",
    "which targets count": "those predicted with confidence ≥ τ",
    "unlabeled loss": "cross-entropy",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, ramped up linearly",
    "state beyond the weights": "none",
}


# Where this method's defaults (TorchSSL's, used by own and TorchSSL alike) differ from its paper's recipe.
DEFAULTS_DIFFER_FROM_PAPER = (
    ("Lee uses every pseudo-label (no threshold) and raises λ over epochs; TorchSSL's defaults (used here): τ = "
     '0.95, λ ramped linearly over the first 40 % of the iterations.'),
)

DIFFERENCES_FROM_TORCHSSL = (
    ("Batch norm: own forwards [x; u] in one pass, so batch norm normalises and updates its running statistics "
     "over labeled and unlabeled images together; TorchSSL forwards x, then u with its running statistics frozen "
     "(u normalised by its own batch statistics, the running statistics from x alone)."),
)


def describe_loss(config: TrainConfig) -> str:
    return (f"ℓ = ℓ_s + λ(t)·ℓ_u, {ramp_words(config)}; {labeled_loss_words(config)}; "
            f"ℓ_u = 1/(μB)·Σ 1[max p ≥ τ]·CE(argmax p, f(weak(u))) over {unlabeled_batch_words(config)}, "
            f"τ = {config.threshold:g}, p = softmax of the same forward pass (no gradient); one forward pass over "
            "[weak(x); weak(u)]")


def pseudo_label_loss(labeled_logits: torch.Tensor, labels: torch.Tensor, unlabeled_logits: torch.Tensor,
                      threshold: float, unsupervised_weight: float) -> StepLoss:
    supervised = F.cross_entropy(labeled_logits.float(), labels)
    confidence, pseudo_labels = torch.softmax(unlabeled_logits.detach().float(), dim=-1).max(dim=-1)
    mask = (confidence >= threshold).float()
    unsupervised = (F.cross_entropy(unlabeled_logits.float(), pseudo_labels, reduction="none") * mask).mean()
    return StepLoss(supervised + unsupervised_weight * unsupervised, supervised, unsupervised, mask, pseudo_labels,
                    class_thresholds=fixed_class_thresholds(threshold, unlabeled_logits))


def pseudo_label_step(model: nn.Module, labeled_images: torch.Tensor, labels: torch.Tensor,
                      unlabeled_images: torch.Tensor, threshold: float, unsupervised_weight: float) -> StepLoss:
    logits = model(torch.cat([labeled_images, unlabeled_images]))
    labeled_logits, unlabeled_logits = logits.split([len(labeled_images), len(unlabeled_images)])
    loss = pseudo_label_loss(labeled_logits, labels, unlabeled_logits, threshold, unsupervised_weight)
    loss.logits = logits
    return loss


def step(inputs: StepInputs) -> StepLoss:
    (unlabeled_images,) = inputs.unlabeled_views
    return pseudo_label_step(inputs.model, inputs.labeled_images, inputs.labels, unlabeled_images,
                             inputs.config.threshold, inputs.ramped_weight)
