"""FlexMatch (Zhang et al., NeurIPS 2021, arXiv:2110.08263): FixMatch with Curriculum Pseudo Labeling, a threshold
per class that rises as the model learns that class.

The learning effect of class c is the number of unlabeled images whose latest confident pseudo-label is c; with
N unlabeled images, τ the fixed threshold and ĉ(n) ∈ {−1, 0, …, C−1} image n's latest pseudo-label predicted
with confidence ≥ τ (−1: none yet):

    σ_t(c) = Σ_n 1[ĉ(n) = c]                                    the learning effect of class c
    β_t(c) = σ_t(c) / max(max_c σ_t, N − Σ_c σ_t)      with the threshold warm-up (the unused images as a class)
    β_t(c) = σ_t(c) / max_c σ_t                         without it
    T_t(c) = M(β_t(c)) · τ,   M(x) = x / (2 − x)         the convex mapping

and, for a labeled batch x of size B and an unlabeled batch u of size μB, q = softmax(f(weak(u))) as a constant:

    ℓ_s = CE(labels, f(weak(x)))
    ℓ_u = 1/(μB) · Σ 1[max q ≥ T_t(argmax q)] · CE(argmax q, f(strong(u)))
    ℓ   = ℓ_s + λ ℓ_u

after which every image of u predicted with max q ≥ τ takes argmax q as its latest pseudo-label. The latest
pseudo-labels are the method's state beyond the weights, checkpointed with the run. Hard pseudo-labels, τ = 0.95,
λ = 1 and the warm-up are TorchSSL's CIFAR-10 defaults. One forward pass over [weak(x); weak(u); strong(u)].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from implementations.interface import TrainConfig
from implementations.own.step_loss import (
    StepInputs,
    StepLoss,
    labeled_loss_words,
    unlabeled_batch_words,
)

VIEWS = ("weak", "strong")

# How FlexMatch differs from the other methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "the argmax of the prediction on its weak view (a hard pseudo-label)",
    "views of an unlabeled image": "weak (target) and strong (trained)",
    "which targets count": "those predicted with confidence ≥ T_t(c), a threshold per class that rises with how "
                           "many images are confidently predicted as c",
    "unlabeled loss": "cross-entropy",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, constant",
    "state beyond the weights": "the latest confident pseudo-label of every unlabeled image (checkpointed with "
                                "the run)",
}


# Where this method's defaults (TorchSSL's, used by own and TorchSSL alike) differ from its paper's recipe.
DEFAULTS_DIFFER_FROM_PAPER = ()

DIFFERENCES_FROM_TORCHSSL = (
    ("State: own checkpoints every unlabeled image's latest confident pseudo-label and restores it on resume; "
     "TorchSSL's save_model does not save it (selected_label), so a resumed TorchSSL run starts again with no "
     "pseudo-label and every threshold at 0."),
    ("A degenerate case: when every unlabeled image has the same latest pseudo-label c, TorchSSL keeps the previous "
     "iteration's β (its `max(pseudo_counter.values()) < len(self.ulb_dset)`); own computes β(c) = 1 and 0 for the "
     "other classes, as the formula gives."),
)


@dataclass
class FlexMatchState:
    latest_pseudo_labels: torch.Tensor  # int64 (N,): of each unlabeled image, the latest confident one; −1: none


def new_state(unlabeled_images: int, device: torch.device) -> FlexMatchState:
    return FlexMatchState(torch.full((unlabeled_images,), -1, dtype=torch.int64, device=device))


def describe_loss(config: TrainConfig) -> str:
    normaliser = "max(max_c σ, N − Σ σ) (threshold warm-up)" if config.threshold_warmup else "max_c σ"
    return (f"ℓ = ℓ_s + λ·ℓ_u, λ = {config.unsupervised_weight:g}; {labeled_loss_words(config)}; "
            f"ℓ_u = 1/(μB)·Σ 1[max q ≥ T(argmax q)]·CE(argmax q, f(strong(u))) over {unlabeled_batch_words(config)}, "
            "q = softmax of the weak view (no gradient); per-class thresholds T(c) = τ·β(c)/(2 − β(c)), "
            f"τ = {config.threshold:g}, β(c) = σ(c)/{normaliser}, σ(c) the number of the N unlabeled images whose "
            "latest pseudo-label predicted with confidence ≥ τ is c; one forward pass over "
            "[weak(x); weak(u); strong(u)]")


def convex_mapping(learning_effect: torch.Tensor) -> torch.Tensor:
    """M(x) = x / (2 − x): 0 at 0, 1 at 1, below x in between."""
    return learning_effect / (2.0 - learning_effect)


def class_thresholds(latest_pseudo_labels: torch.Tensor, num_classes: int, threshold: float,
                     warmup: bool) -> torch.Tensor:
    """T_t(c) = M(β_t(c))·τ for every class c, from the latest pseudo-labels (−1: none)."""
    counts = torch.zeros(num_classes + 1, device=latest_pseudo_labels.device)
    counts.scatter_add_(0, latest_pseudo_labels + 1, torch.ones_like(latest_pseudo_labels, dtype=counts.dtype))
    unused, learning_effect = counts[0], counts[1:]  # N − Σσ, and σ(c)
    normaliser = torch.maximum(learning_effect.max(), unused) if warmup else learning_effect.max()
    beta = learning_effect / normaliser.clamp(min=1)  # nothing confident yet without warm-up: β = 0
    return convex_mapping(beta) * threshold


def flexmatch_loss(labeled_logits: torch.Tensor, labels: torch.Tensor, weak_logits: torch.Tensor,
                   strong_logits: torch.Tensor, thresholds: torch.Tensor, unsupervised_weight: float) -> StepLoss:
    supervised = F.cross_entropy(labeled_logits.float(), labels)

    confidence, pseudo_labels = torch.softmax(weak_logits.detach().float(), dim=-1).max(dim=-1)
    mask = (confidence >= thresholds[pseudo_labels]).float()
    unsupervised = (F.cross_entropy(strong_logits.float(), pseudo_labels, reduction="none") * mask).mean()

    return StepLoss(supervised + unsupervised_weight * unsupervised, supervised, unsupervised, mask, pseudo_labels,
                    class_thresholds=thresholds)


def updated_pseudo_labels(latest_pseudo_labels: torch.Tensor, indices: torch.Tensor, pseudo_labels: torch.Tensor,
                          confident: torch.Tensor) -> torch.Tensor:
    """The latest pseudo-labels after a batch: image indices[i] takes pseudo_labels[i] where confident[i]; the
    others keep theirs. An image drawn more than once takes its last confident prediction in the batch, on every
    device: each image's winning position is a max (scatter_reduce), where an indexed assignment with repeated
    indices would leave the winner to chance on a GPU. No host synchronisation."""
    positions = torch.arange(len(indices), device=indices.device)
    winner = torch.full((len(latest_pseudo_labels),), -1, dtype=torch.int64, device=indices.device)
    winner.scatter_reduce_(0, indices, torch.where(confident, positions, -1), reduce="amax")
    return torch.where(winner >= 0, pseudo_labels[winner.clamp(min=0)], latest_pseudo_labels)


def step(inputs: StepInputs) -> StepLoss:
    config, state = inputs.config, inputs.state
    # The thresholds of this iteration, from the pseudo-labels before it.
    thresholds = class_thresholds(state.latest_pseudo_labels, inputs.num_classes, config.threshold,
                                  config.threshold_warmup)
    weak_images, strong_images = inputs.unlabeled_views
    logits = inputs.model(torch.cat([inputs.labeled_images, weak_images, strong_images]))
    labeled_logits, weak_logits, strong_logits = logits.split(
        [len(inputs.labeled_images), len(weak_images), len(strong_images)])
    loss = flexmatch_loss(labeled_logits, inputs.labels, weak_logits, strong_logits, thresholds,
                          config.unsupervised_weight)
    loss.logits = logits

    confident = torch.softmax(weak_logits.detach().float(), dim=-1).amax(dim=-1) >= config.threshold  # fixed τ
    state.latest_pseudo_labels = updated_pseudo_labels(state.latest_pseudo_labels, inputs.unlabeled_indices,
                                                       loss.pseudo_labels, confident)
    return loss
