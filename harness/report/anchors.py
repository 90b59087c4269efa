"""The published numbers our runs are set beside: each with its source, its protocol, and which of our
statistics is taken the same way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    source: str
    protocol: str
    top1: dict[int, tuple[float, float]]  # labels -> (mean %, std %)
    statistic: str = "top1_best"  # which of our numbers is in the same protocol (a run_summaries column)


# CIFAR-10 FixMatch (RandAugment). The paper gives error rates; accuracy = 100 − error.
FIXMATCH_PAPER = Anchor(
    "FixMatch paper (RA)",
    "median of the last 20 checkpoints, 5 folds; 100 − published error",
    {40: (86.19, 3.37), 250: (94.93, 0.65), 4000: (95.74, 0.05)},
    statistic="top1_median_window",
)


def torchssl_readme(top1: dict[int, tuple[float, float]]) -> Anchor:
    """An algorithm's row of TorchSSL's README at the pinned commit (its table of CIFAR-10 accuracies)."""
    return Anchor("TorchSSL README", "best checkpoint, 3 seeds", top1)


TORCHSSL_README = torchssl_readme({40: (92.53, 0.28), 250: (95.14, 0.05), 4000: (95.79, 0.08)})


# CIFAR-10 MixMatch, its paper's Table 1 (error rates, 5 splits; it has no 40-label run).
MIXMATCH_PAPER = Anchor(
    "MixMatch paper",
    "median of the last 20 checkpoints, 5 splits; 100 − published error",
    {250: (88.92, 0.87), 4000: (93.76, 0.06)},
    statistic="top1_median_window",
)

# Every algorithm's published CIFAR-10 numbers. TorchSSL's FullySupervised row trains on all 50,000 labels, so our
# supervised baseline (the labeled split only) has none.
PUBLISHED: dict[str, tuple[Anchor, ...]] = {
    "fixmatch": (FIXMATCH_PAPER, TORCHSSL_README),
    "pseudolabel": (torchssl_readme({40: (25.39, 0.26), 250: (53.51, 2.2), 4000: (84.92, 0.19)}),),
    "pimodel": (torchssl_readme({40: (25.66, 1.76), 250: (53.76, 1.29), 4000: (86.87, 0.59)}),),
    "meanteacher": (torchssl_readme({40: (29.91, 1.6), 250: (62.54, 3.3), 4000: (91.9, 0.21)}),),
    "mixmatch": (MIXMATCH_PAPER, torchssl_readme({40: (63.81, 6.48), 250: (86.37, 0.59), 4000: (93.34, 0.26)})),
    "uda": (torchssl_readme({40: (89.38, 3.75), 250: (94.84, 0.06), 4000: (95.71, 0.07)}),),
    "flexmatch": (torchssl_readme({40: (95.03, 0.06), 250: (95.02, 0.09), 4000: (95.81, 0.01)}),),
    "remixmatch": (torchssl_readme({40: (90.12, 1.03), 250: (93.7, 0.05), 4000: (95.16, 0.01)}),),
    "vat": (torchssl_readme({40: (25.34, 2.12), 250: (58.97, 1.79), 4000: (89.49, 0.12)}),),
    # FreeMatch and SoftMatch: TorchSSL's README at the pin has their code but no CIFAR-10 row.
}
