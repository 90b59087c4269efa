"""The methods the own implementation has, one small unit (one file) each, and the one place the loop, the
batches and the method sheet look a method up.

Every method module declares:

- `VIEWS`: the views of the unlabeled batch it learns from, in the order they are drawn ("weak" is flip + crop,
  "strong" adds RandAugment and Cutout; two "weak" are two independent draws of the same images; () for none);
- `TRAITS`: how it differs from the other methods, in words (the report's "How the methods differ" table);
- `DIFFERENCES_FROM_TORCHSSL`: where it differs from TorchSSL's code for the same method, one sentence each;
- `describe_loss(config)`: its loss in words, for the method sheet every run records;
- `step(inputs: StepInputs) -> StepLoss`: the loss of one iteration (the loop backpropagates it);

and, when it keeps state beyond the weights that the loop must checkpoint (FlexMatch's pseudo-labels),
`new_state(unlabeled_images, device)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import torch

# Each is implementations/own/<name>.py, imported when asked for: the harness asks which algorithms own has
# without importing torch.
OWN_ALGORITHMS = ("fixmatch", "supervised", "pseudolabel", "pimodel", "meanteacher", "mixmatch", "uda", "flexmatch")


def own_method(algorithm: str) -> ModuleType:
    if algorithm not in OWN_ALGORITHMS:
        raise ValueError(f"own has no algorithm '{algorithm}'")
    return importlib.import_module(f"implementations.own.{algorithm}")


def new_method_state(algorithm: str, unlabeled_images: int, device: torch.device) -> object | None:
    """The method's state beyond the weights at the start of a run (None: it has none)."""
    new_state = getattr(own_method(algorithm), "new_state", None)
    return None if new_state is None else new_state(unlabeled_images, device)

