"""The methods the own implementation has, one file each (implementations/own/<name>.py)."""

from __future__ import annotations

from implementations.interface import ALGORITHMS, TrainConfig

OWN_ALGORITHMS = ("fixmatch", "supervised", "pseudolabel", "pimodel", "meanteacher")


def unsupported_reason(config: TrainConfig) -> str | None:
    if config.algorithm in OWN_ALGORITHMS:
        return None
    return (f"own has no {ALGORITHMS[config.algorithm].title.split(' (')[0]} yet; run --algorithm {config.algorithm} "
            "with --impl torchssl.")
