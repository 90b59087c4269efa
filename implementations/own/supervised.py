"""The supervised baseline (TorchSSL's fullysupervised): the labeled split only, with the same network,
optimiser, schedule and EMA as every other method.

For a labeled batch x of size B:

    ℓ = CE(labels, f(weak(x)))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from implementations.interface import TrainConfig
from implementations.own.step_loss import StepInputs, StepLoss, labeled_loss_words

VIEWS: tuple[str, ...] = ()  # no unlabeled batch

# How the baseline differs from the methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "none: unlabeled images are not used",
    "views of an unlabeled image": "none",
    "which targets count": "–",
    "unlabeled loss": "none",
    "mixing": "none",
    "weight of the unlabeled loss": "–",
    "state beyond the weights": "none",
}

# Where this method's defaults differ from its paper's recipe (none: TorchSSL's are the paper's).
DEFAULTS_DIFFER_FROM_PAPER: tuple[str, ...] = ()
DIFFERENCES_FROM_TORCHSSL: tuple[str, ...] = ()


def describe_loss(config: TrainConfig) -> str:
    return labeled_loss_words(config)


def step(inputs: StepInputs) -> StepLoss:
    """λ = 0 and no unlabeled batch, reported in the same shape as the methods' losses."""
    logits = inputs.model(inputs.labeled_images)
    supervised = F.cross_entropy(logits.float(), inputs.labels)
    empty = inputs.labels.new_zeros(0)
    return StepLoss(supervised, supervised, torch.zeros_like(supervised), empty.float(), empty, logits)
