"""MixMatch (Berthelot et al., NeurIPS 2019, arXiv:1905.02249), Algorithm 1.

For a labeled batch x of size B with one-hot labels p, and an unlabeled batch u of size μB, each image of u
weakly augmented K = 2 times (two independent flips + crops), C classes:

    q̄   = 1/K · Σ_k softmax(f(weak_k(u)))                 the guessed label, no gradient
    q   = Sharpen(q̄, T),   Sharpen(p, T)_i = p_i^(1/T) / Σ_j p_j^(1/T)
    W   = Shuffle(Concat(X̂, Û)),   X̂ = (weak(x), p),   Û = ((weak₁(u), q), (weak₂(u), q))
    X′  = MixUp(X̂_i, W_i),   U′ = MixUp(Û_i, W_{|X̂|+i})
    MixUp((x₁, p₁), (x₂, p₂)) = (λ′x₁ + (1 − λ′)x₂, λ′p₁ + (1 − λ′)p₂),   λ ~ Beta(α, α),   λ′ = max(λ, 1 − λ)
    ℓ_s = 1/|X′| · Σ_{(x, p) ∈ X′} H(p, f(x))             cross-entropy with the mixed soft targets
    ℓ_u = 1/(C·|U′|) · Σ_{(u, q) ∈ U′} ‖q − softmax(f(u))‖²
    ℓ   = ℓ_s + λ_u(t) ℓ_u,   λ_u(t) = λ_u · min(1, t / (w·K_it))

One λ and one shuffle per batch, drawn from torch's global random stream (saved in every checkpoint). The guess
is one forward pass over [weak₁(u); weak₂(u)] without gradient, the mixed batch one forward pass over [X′; U′],
both in training mode. The paper's CIFAR-10 values are α = 0.75, λ_u = 75, T = 0.5, λ_u ramped up over its
first 16,000 steps; the defaults here are TorchSSL's: α = 0.5, λ_u = 100, T = 0.5, the ramp over w = 40 % of
the K_it iterations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from implementations.interface import TrainConfig
from implementations.own.step_loss import (
    StepInputs,
    StepLoss,
    labeled_loss_words,
    ramp_words,
    unlabeled_batch_words,
)

VIEWS = ("weak", "weak")  # K = 2 independent weak augmentations of each unlabeled image

# How MixMatch differs from the other methods (the report's "How the methods differ" table).
TRAITS = {
    "target for an unlabeled image": "the average prediction over its K = 2 weak views, sharpened with T (soft)",
    "views of an unlabeled image": "two independent weak views (both target and trained, after MixUp)",
    "which targets count": "all",
    "unlabeled loss": "mean squared difference between the softmax and the mixed target",
    "mixing": "MixUp of labeled and unlabeled images and targets with a shuffle of them, λ′ = max(λ, 1 − λ)",
    "weight of the unlabeled loss": "λ, ramped up linearly",
    "state beyond the weights": "none",
}


# Where this method's defaults (TorchSSL's, used by own and TorchSSL alike) differ from its paper's recipe.
DEFAULTS_DIFFER_FROM_PAPER = (
    ("MixMatch paper, CIFAR-10: α = 0.75 and λ_u = 75, ramped up over 16,000 steps; TorchSSL's defaults (used here):"
     ' α = 0.5, λ_u = 100, ramped up linearly over the first 40 % of the iterations.'),
)

DIFFERENCES_FROM_TORCHSSL = (
    ("Batch norm of the guess: own's forward over [weak₁(u); weak₂(u)] (without gradient) updates the running "
     "statistics; TorchSSL freezes them for its two guess forwards (Bn_Controller), as the paper's code does."),
    ("Batch norm of the mixed batch: own forwards [X′; U′] in one pass, batch norm over all of it; TorchSSL "
     "interleaves labeled and unlabeled rows into B-sized chunks, forwards each chunk on its own batch statistics "
     "and lets only the first chunk update the running statistics (the paper's code does the same)."),
    ("Random draws: own draws λ ~ Beta(α, α) and the shuffle from torch's generator; TorchSSL draws λ from numpy "
     "(np.random.beta) and the shuffle from torch."),
)


def describe_loss(config: TrainConfig) -> str:
    return (f"ℓ = ℓ_s + λ(t)·ℓ_u, {ramp_words(config)}; {labeled_loss_words(config)} and "
            f"{unlabeled_batch_words(config)}, each unlabeled image weakly augmented twice: guessed label q = Sharpen(mean of the two softmax "
            f"outputs, T = {config.sharpen_temperature:g}), no gradient; labeled and unlabeled images with their "
            f"targets mixed with a shuffle of them, λ′ = max(λ, 1 − λ), λ ~ Beta({config.mixup_alpha:g}, "
            f"{config.mixup_alpha:g}); ℓ_s = cross-entropy with the mixed targets of the mixed labeled images, "
            "ℓ_u = mean squared difference between the softmax and the mixed targets of the mixed unlabeled images; "
            "one forward pass over the mixed batch")


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """p_i^(1/T) / Σ_j p_j^(1/T): T < 1 pushes the distribution towards its argmax."""
    powered = probabilities ** (1.0 / temperature)
    return powered / powered.sum(dim=-1, keepdim=True)


def guess_labels(view_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """The sharpened average of the predictions on the K views of each unlabeled image."""
    average = torch.stack([torch.softmax(logits.float(), dim=-1) for logits in view_logits]).mean(dim=0)
    return sharpen(average, temperature)


def mixup(images: torch.Tensor, targets: torch.Tensor, mixing_weight: float,
          permutation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row mixed with the row the permutation sends it: λ′·row + (1 − λ′)·other, λ′ = max(λ, 1 − λ), so that a
    mixed image stays closer to its own (labeled images stay labeled images, unlabeled ones unlabeled)."""
    weight = max(mixing_weight, 1.0 - mixing_weight)
    return (weight * images + (1.0 - weight) * images[permutation],
            weight * targets + (1.0 - weight) * targets[permutation])


def mixmatch_loss(labeled_logits: torch.Tensor, labeled_targets: torch.Tensor, unlabeled_logits: torch.Tensor,
                  unlabeled_targets: torch.Tensor, unsupervised_weight: float) -> StepLoss:
    """ℓ_s: cross-entropy with soft targets, mean over the images; ℓ_u: squared error, mean over classes and images."""
    supervised = -(labeled_targets * torch.log_softmax(labeled_logits.float(), dim=-1)).sum(dim=-1).mean()
    unsupervised = F.mse_loss(torch.softmax(unlabeled_logits.float(), dim=-1), unlabeled_targets)
    return StepLoss(supervised + unsupervised_weight * unsupervised, supervised, unsupervised, None, None)


def step(inputs: StepInputs) -> StepLoss:
    config, model = inputs.config, inputs.model
    labeled_images, views = inputs.labeled_images, inputs.unlabeled_views
    with torch.no_grad():
        guessed = guess_labels(model(torch.cat(views)).chunk(len(views)), config.sharpen_temperature)

    images = torch.cat([labeled_images, *views])
    targets = torch.cat([F.one_hot(inputs.labels, inputs.num_classes).float(), *[guessed] * len(views)])
    mixing_weight = (float(torch.distributions.Beta(config.mixup_alpha, config.mixup_alpha).sample())
                     if config.mixup_alpha > 0 else 1.0)
    permutation = torch.randperm(len(images), device=images.device)  # drawn on the device: no host copy
    mixed_images, mixed_targets = mixup(images, targets, mixing_weight, permutation)

    logits = model(mixed_images)
    labeled_count = len(labeled_images)
    loss = mixmatch_loss(logits[:labeled_count], mixed_targets[:labeled_count], logits[labeled_count:],
                         mixed_targets[labeled_count:], inputs.ramped_weight)
    loss.logits = logits
    return loss
