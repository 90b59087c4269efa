"""Π-model (Laine & Aila, ICLR 2017, Section 2.1): two stochastic augmentations of each unlabeled image go
through the same network, and its two predictions are asked to agree.

For a labeled batch x of size B and an unlabeled batch u of size μB, each image of u weakly augmented twice
(two independent flips + crops, weak₁ and weak₂), C classes:

    ℓ_s = CE(labels, f(x))
    z   = softmax(f(weak₁(u))),   z̃ = softmax(f(weak₂(u)))
    ℓ_u = 1/(C·μB) · Σ ‖z − z̃‖²            the gradient flows through both, as in the paper
    ℓ   = ℓ_s + λ(t) ℓ_u,   λ(t) = λ · min(1, t / (w·K))

The paper raises λ(t) along a Gaussian curve, exp(−5(1 − t/T)²); the linear ramp over w = 40 % of the K
iterations and λ = 10 are TorchSSL's defaults. One forward pass over [x; weak₁(u); weak₂(u)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from implementations.interface import TrainConfig
from implementations.own.step_loss import (
    StepInputs,
    StepLoss,
    labeled_loss_words,
    ramp_words,
    unlabeled_batch_words,
)

VIEWS = ("weak", "weak")  # two independent draws

# How the Π-model differs from the other methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "the prediction on another weak view, by the same network (soft)",
    "views of an unlabeled image": "two independent weak views",
    "which targets count": "all",
    "unlabeled loss": "mean squared difference of the softmax outputs",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, ramped up linearly",
    "state beyond the weights": "none",
}


# Where this method's defaults (TorchSSL's, used by own and TorchSSL alike) differ from its paper's recipe.
DEFAULTS_DIFFER_FROM_PAPER = (
    ("Laine & Aila ramp λ up along the Gaussian exp(−5(1 − t/T)²); TorchSSL's default (used here) ramps it linearly "
     'over the first 40 % of the iterations.'),
)

DIFFERENCES_FROM_TORCHSSL = (
    ("Gradient: own's flows through both predictions, as in the paper (Section 2.1); TorchSSL detaches the "
     "second view's (models/pimodel/pimodel_utils.py, consistency_loss), which makes it a target."),
    ("Batch norm: own forwards [x; weak₁(u); weak₂(u)] in one pass, so batch norm normalises and updates its "
     "running statistics over all three together; TorchSSL forwards x, then each view separately with its running "
     "statistics frozen (each view normalised by its own batch statistics, the running statistics from x alone)."),
)


def describe_loss(config: TrainConfig) -> str:
    return (f"ℓ = ℓ_s + λ(t)·ℓ_u, {ramp_words(config)}; {labeled_loss_words(config)}; ℓ_u = 1/(C·μB)·Σ ‖softmax "
            f"f(weak₁(u)) − softmax f(weak₂(u))‖² over {unlabeled_batch_words(config)}, two independent weak views, "
            "gradient through both")


def squared_difference_of_predictions(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """1/(C·N) · Σ ‖softmax(logits) − softmax(other_logits)‖²: the mean squared error of the two predictions."""
    return F.mse_loss(torch.softmax(logits.float(), dim=-1), torch.softmax(other_logits.float(), dim=-1))


def pi_model_loss(labeled_logits: torch.Tensor, labels: torch.Tensor, first_view_logits: torch.Tensor,
                  second_view_logits: torch.Tensor, unsupervised_weight: float) -> StepLoss:
    supervised = F.cross_entropy(labeled_logits.float(), labels)
    unsupervised = squared_difference_of_predictions(first_view_logits, second_view_logits)
    return StepLoss(supervised + unsupervised_weight * unsupervised, supervised, unsupervised, None, None)


def pi_model_step(model: nn.Module, labeled_images: torch.Tensor, labels: torch.Tensor, first_view: torch.Tensor,
                  second_view: torch.Tensor, unsupervised_weight: float) -> StepLoss:
    logits = model(torch.cat([labeled_images, first_view, second_view]))
    labeled_logits, first_logits, second_logits = logits.split([len(labeled_images), len(first_view), len(second_view)])
    loss = pi_model_loss(labeled_logits, labels, first_logits, second_logits, unsupervised_weight)
    loss.logits = logits
    return loss


def step(inputs: StepInputs) -> StepLoss:
    first_view, second_view = inputs.unlabeled_views
    return pi_model_step(inputs.model, inputs.labeled_images, inputs.labels, first_view, second_view,
                         inputs.ramped_weight)
