"""What the shared loop (trainer.py) hands one training step of any method (`StepInputs`), what the step hands
back (`StepLoss`), the ramp-up of the weight of the unlabeled loss that several methods share, and the phrases
their method sheets share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from implementations.interface import TrainConfig

if TYPE_CHECKING:  # flexmatch.py imports this module
    from implementations.own.flexmatch import FlexMatchState


@dataclass
class StepInputs:
    model: nn.Module  # the trained model (compiled when config.compile)
    teacher: nn.Module  # the exponential moving average of its weights (the model the loop evaluates)
    labeled_images: torch.Tensor  # B, weakly augmented
    labels: torch.Tensor
    unlabeled_views: tuple[torch.Tensor, ...]  # the unlabeled batch, one tensor per entry of the method's VIEWS
    unlabeled_indices: torch.Tensor | None  # of the unlabeled images in the training set (None: no unlabeled batch)
    ramped_weight: float  # λ(t) = linear_rampup(λ, t, K, w): for the methods that ramp λ up; the others read λ
    num_classes: int
    config: TrainConfig
    state: FlexMatchState | None  # the method's state beyond the weights (FlexMatch's pseudo-labels), else None


@dataclass
class StepLoss:
    total: torch.Tensor  # what is backpropagated
    supervised: torch.Tensor
    unsupervised: torch.Tensor  # before its weight λ
    mask: torch.Tensor | None  # methods with pseudo-labels: 1.0 where an unlabeled image's pseudo-label is used
    pseudo_labels: torch.Tensor | None
    logits: torch.Tensor | None = None  # of the step's forward pass, as the model gave them
    class_thresholds: torch.Tensor | None = None  # threshold methods: the confidence a pseudo-label of class c needs


def fixed_class_thresholds(threshold: float, logits: torch.Tensor) -> torch.Tensor:
    """A fixed threshold τ as the per-class thresholds the loop logs: τ for each of the logits' C classes (float64,
    so that τ is logged as configured)."""
    return torch.full(logits.shape[-1:], threshold, dtype=torch.float64, device=logits.device)


def linear_rampup(weight: float, iterations_done: int, total_iterations: int, warmup_fraction: float) -> float:
    """λ(t) = λ · min(1, t / (w·K)): 0 at the start, λ from w·K iterations on (w = 0: λ throughout)."""
    if warmup_fraction <= 0:
        return weight
    return weight * min(1.0, iterations_done / (warmup_fraction * total_iterations))


# Phrases the methods' describe_loss share (implementations/method_sheet.py records them with every run).

def labeled_loss_words(config: TrainConfig) -> str:
    return f"ℓ_s = cross-entropy on the weak view of B = {config.labeled_batch_size} labeled images"


def unlabeled_batch_words(config: TrainConfig) -> str:
    return f"μB = {config.unlabeled_batch_size} unlabeled images"


def ramp_words(config: TrainConfig) -> str:
    if config.unsupervised_warmup > 0:
        return (f"λ(t) = λ·min(1, t/(w·K)), λ = {config.unsupervised_weight:g}, "
                f"w = {config.unsupervised_warmup:g}")
    return f"λ = {config.unsupervised_weight:g} throughout"
