"""FixMatch (Sohn et al., 2020), Algorithm 1, and its training recipe.

For a labeled batch x of size B and an unlabeled batch u of size μB:

    ℓ_s = CE(labels, f(weak(x)))
    q   = softmax(f(weak(u)))            treated as a constant (no gradient)
    ℓ_u = 1/(μB) · Σ 1[max q ≥ τ] · CE(argmax q, f(strong(u)))
    ℓ   = ℓ_s + λ ℓ_u

One forward pass over [weak(x); weak(u); strong(u)], so batch norm sees all three together.
Optimised by SGD with Nesterov momentum, lr η·cos(7πk / 16K), weight decay on convolution
and linear weights only; the model evaluated is an exponential moving average of the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from implementations.interface import TrainConfig
from implementations.own.step_loss import (
    StepInputs,
    StepLoss,
    fixed_class_thresholds,
    labeled_loss_words,
    unlabeled_batch_words,
)

VIEWS = ("weak", "strong")  # of each unlabeled image, in the order the batch draws them

# How FixMatch differs from the other methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "the argmax of the prediction on its weak view (a hard pseudo-label)",
    "views of an unlabeled image": "weak (target) and strong (trained)",
    "which targets count": "those predicted with confidence ≥ τ",
    "unlabeled loss": "cross-entropy",
    "mixing": "none",
    "weight of the unlabeled loss": "λ, constant",
    "state beyond the weights": "none",
}

# The loss is TorchSSL's; where the recipe every method shares differs (network, augmentation, optimisation,
# evaluation) is implementations/ledger.py.
# Where this method's defaults differ from its paper's recipe (none: TorchSSL's are the paper's).
DEFAULTS_DIFFER_FROM_PAPER: tuple[str, ...] = ()
DIFFERENCES_FROM_TORCHSSL: tuple[str, ...] = ()


def describe_loss(config: TrainConfig) -> str:
    return (f"ℓ = ℓ_s + λ·ℓ_u, λ = {config.unsupervised_weight:g}; {labeled_loss_words(config)}; "
            f"ℓ_u = 1/(μB)·Σ 1[max q ≥ τ]·CE(argmax q, f(strong(u))) over {unlabeled_batch_words(config)}, "
            f"τ = {config.threshold:g}, q = softmax of the weak view (no gradient); one forward pass over "
            "[weak(x); weak(u); strong(u)]")


def fixmatch_loss(
    labeled_logits: torch.Tensor,
    labels: torch.Tensor,
    weak_logits: torch.Tensor,
    strong_logits: torch.Tensor,
    threshold: float,
    unsupervised_weight: float,
) -> StepLoss:
    supervised = F.cross_entropy(labeled_logits.float(), labels)

    weak_probabilities = torch.softmax(weak_logits.detach().float(), dim=-1)
    confidence, pseudo_labels = weak_probabilities.max(dim=-1)
    mask = (confidence >= threshold).float()
    # Averaged over the whole unlabeled batch, not over the confident part of it.
    unsupervised = (F.cross_entropy(strong_logits.float(), pseudo_labels, reduction="none") * mask).mean()

    total = supervised + unsupervised_weight * unsupervised
    return StepLoss(total, supervised, unsupervised, mask, pseudo_labels,
                    class_thresholds=fixed_class_thresholds(threshold, weak_logits))


def fixmatch_step(
    model: nn.Module,
    labeled_images: torch.Tensor,
    labels: torch.Tensor,
    weak_images: torch.Tensor,
    strong_images: torch.Tensor,
    threshold: float,
    unsupervised_weight: float,
) -> StepLoss:
    """The loss of one FixMatch iteration (backward and optimiser step are the caller's)."""
    logits = model(torch.cat([labeled_images, weak_images, strong_images]))
    labeled_logits, weak_logits, strong_logits = logits.split(
        [len(labeled_images), len(weak_images), len(strong_images)]
    )
    loss = fixmatch_loss(labeled_logits, labels, weak_logits, strong_logits, threshold, unsupervised_weight)
    loss.logits = logits
    return loss


def step(inputs: StepInputs) -> StepLoss:
    weak_images, strong_images = inputs.unlabeled_views
    return fixmatch_step(inputs.model, inputs.labeled_images, inputs.labels, weak_images, strong_images,
                         inputs.config.threshold, inputs.config.unsupervised_weight)


def build_optimizer(model: nn.Module, learning_rate: float, momentum: float, nesterov: bool,
                    weight_decay: float, device: torch.device) -> torch.optim.SGD:
    """SGD; weight decay on convolution and linear weights only, never on batch norm or biases."""
    decayed = [p for p in model.parameters() if p.ndim > 1]
    not_decayed = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decayed, "weight_decay": weight_decay}, {"params": not_decayed, "weight_decay": 0.0}],
        lr=learning_rate,
        momentum=momentum,
        nesterov=nesterov,
        fused=device.type == "cuda",  # one kernel per step on GPU; CPU keeps the default foreach path
    )


def cosine_schedule(optimizer: torch.optim.Optimizer, total_iterations: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr = η · cos(7πk / 16K): decays to η·cos(7π/16) ≈ 0.2η at the last iteration, never to zero."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: math.cos(7 * math.pi * k / (16 * total_iterations))
    )


class WeightEMA(AveragedModel):
    """EMA of the parameters (decay d: ema ← d·ema + (1-d)·θ); batch-norm statistics are copied.

    The running mean/variance are already moving averages, so, as in FixMatch's reference code,
    the EMA model takes them from the trained model as they are.

    An AveragedModel (its state_dict is the checkpoint's), updated with one `_foreach_lerp_` over the parameters
    and one `_foreach_copy_` over the buffers: AveragedModel.update_parameters would copy its step counter from
    the host to the device on every call, a synchronisation that makes the host wait for each backward pass.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, use_buffers=False)
        self.decay = decay
        # The EMA starts from the initial weights (AveragedModel would copy them again on its first update); the
        # counter is never read, and stays on the host.
        self.n_averaged = torch.ones((), dtype=torch.long)
        self._ema_parameters = list(self.module.parameters())
        self._ema_buffers = list(self.module.buffers())
        self._trained: tuple[int, list[torch.Tensor], list[torch.Tensor]] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self._trained is None or self._trained[0] != id(model):
            self._trained = (id(model), list(model.parameters()), list(model.buffers()))
        _, parameters, buffers = self._trained
        torch._foreach_lerp_(self._ema_parameters, parameters, 1.0 - self.decay)
        if buffers:
            torch._foreach_copy_(self._ema_buffers, buffers)
