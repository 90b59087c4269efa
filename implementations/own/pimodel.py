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

from implementations.own.step_loss import StepLoss

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
