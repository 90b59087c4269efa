"""UDA, Unsupervised Data Augmentation (Xie et al., NeurIPS 2020, arXiv:1904.12848), as its CIFAR-10 code runs
it: the prediction on a strongly augmented view is asked to match the sharpened prediction on a weak one, for the
images the model is confident about.

For a labeled batch x of size B and an unlabeled batch u of size μB, C classes:

    ℓ_s = CE(labels, f(weak(x)))
    q   = softmax(f(weak(u)))                 treated as a constant (no gradient)
    q̃   = softmax(f(weak(u)) / T)             the sharpened target ("softmax temperature controlling", Sec. 3.2)
    ℓ_u = 1/(μB) · Σ 1[max q ≥ τ] · KL(q̃ ‖ softmax(f(strong(u))))      ("confidence-based masking")
    ℓ   = ℓ_s + λ ℓ_u

T = 0.4, τ = 0.8 and λ = 1 are TorchSSL's CIFAR-10 defaults (config/uda/uda_cifar10_*_0.yaml). Training Signal
Annealing, the paper's schedule that drops confidently predicted labeled images from ℓ_s, is left out: TorchSSL's
default TSA_schedule is "none" (in its code the TSA threshold is then 1 and masks nothing). RandAugment is the
strong augmentation of every method here. One forward pass over [weak(x); weak(u); strong(u)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from implementations.interface import TrainConfig
from implementations.own.step_loss import (
    StepInputs,
    StepLoss,
    fixed_class_thresholds,
    labeled_loss_words,
    unlabeled_batch_words,
)

VIEWS = ("weak", "strong")

# How UDA differs from the other methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "the prediction on its weak view sharpened with temperature T (soft)",
    "views of an unlabeled image": "weak (target) and strong (trained)",
    "which targets count": "those predicted with confidence ≥ τ",
    "unlabeled loss": "KL divergence from the sharpened target",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, constant",
    "state beyond the weights": "none",
}


# Where this method's defaults (TorchSSL's, used by own and TorchSSL alike) differ from its paper's recipe.
DEFAULTS_DIFFER_FROM_PAPER = (
    ("The UDA paper anneals the labeled loss (Training Signal Annealing); TorchSSL's CIFAR-10 config (used here) "
     'runs without it (TSA_schedule: none).'),
)

DIFFERENCES_FROM_TORCHSSL = (
    ("Unlabeled loss: own's is the paper's KL divergence KL(q̃ ‖ p); TorchSSL's default ('ce' in "
     "models/uda/uda_utils.py, consistency_loss) is the cross-entropy −Σ q̃ log p, larger by the target's entropy "
     "H(q̃): the same gradient, a larger logged train/unsupervised_loss."),
    "Neither runs Training Signal Annealing (TorchSSL's TSA_schedule 'none', its CIFAR-10 default).",
)


def describe_loss(config: TrainConfig) -> str:
    return (f"ℓ = ℓ_s + λ·ℓ_u, λ = {config.unsupervised_weight:g}; {labeled_loss_words(config)}; "
            f"ℓ_u = 1/(μB)·Σ 1[max q ≥ τ]·KL(softmax(z/T) ‖ softmax f(strong(u))) over "
            f"{unlabeled_batch_words(config)}, τ = {config.threshold:g}, T = {config.sharpen_temperature:g}, "
            "z the logits of the weak view and q = softmax(z) (no gradient); no Training Signal Annealing; one "
            "forward pass over [weak(x); weak(u); strong(u)]")


def uda_loss(labeled_logits: torch.Tensor, labels: torch.Tensor, weak_logits: torch.Tensor,
             strong_logits: torch.Tensor, threshold: float, temperature: float,
             unsupervised_weight: float) -> StepLoss:
    supervised = F.cross_entropy(labeled_logits.float(), labels)

    weak_logits = weak_logits.detach().float()
    confidence, pseudo_labels = torch.softmax(weak_logits, dim=-1).max(dim=-1)
    mask = (confidence >= threshold).float()
    sharpened_target = torch.softmax(weak_logits / temperature, dim=-1)
    divergence = F.kl_div(torch.log_softmax(strong_logits.float(), dim=-1), sharpened_target,
                          reduction="none").sum(dim=-1)
    unsupervised = (divergence * mask).mean()  # over the whole unlabeled batch

    return StepLoss(supervised + unsupervised_weight * unsupervised, supervised, unsupervised, mask, pseudo_labels,
                    class_thresholds=fixed_class_thresholds(threshold, weak_logits))


def step(inputs: StepInputs) -> StepLoss:
    weak_images, strong_images = inputs.unlabeled_views
    logits = inputs.model(torch.cat([inputs.labeled_images, weak_images, strong_images]))
    labeled_logits, weak_logits, strong_logits = logits.split(
        [len(inputs.labeled_images), len(weak_images), len(strong_images)])
    config = inputs.config
    loss = uda_loss(labeled_logits, inputs.labels, weak_logits, strong_logits, config.threshold,
                    config.sharpen_temperature, config.unsupervised_weight)
    loss.logits = logits
    return loss
