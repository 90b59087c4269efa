"""What one training step of any method hands the shared loop (trainer.py), and the ramp-up of the weight of
the unlabeled loss that several methods share."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepLoss:
    total: torch.Tensor  # what is backpropagated
    supervised: torch.Tensor
    unsupervised: torch.Tensor  # before its weight λ
    mask: torch.Tensor | None  # methods with pseudo-labels: 1.0 where an unlabeled image's pseudo-label is used
    pseudo_labels: torch.Tensor | None
    logits: torch.Tensor | None = None  # of the step's forward pass, as the model gave them


def linear_rampup(weight: float, iterations_done: int, total_iterations: int, warmup_fraction: float) -> float:
    """λ(t) = λ · min(1, t / (w·K)): 0 at the start, λ from w·K iterations on (w = 0: λ throughout)."""
    if warmup_fraction <= 0:
        return weight
    return weight * min(1.0, iterations_done / (warmup_fraction * total_iterations))
