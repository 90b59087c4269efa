"""FixMatch implementations behind one interface (see interface.py).

- `own`: FixMatch written from the paper (implementations/own), with the paper's choices;
- `own-as-torchssl`: the same code with every switch of the difference ledger (ledger.py) at TorchSSL's
  choice, so that own and TorchSSL can be told apart from the choices they make;
- `torchssl`: TorchSSL's own FixMatch at the pinned commit, unmodified (implementations/torchssl).
"""

from __future__ import annotations

import importlib

from implementations.interface import Implementation, TrainConfig

# name -> "module:class"; imported only when asked for, so one implementation's
# dependencies never load into another's process.
IMPLEMENTATIONS = {
    "own": "implementations.own.trainer:OwnFixMatch",
    "own-as-torchssl": "implementations.own.trainer:OwnFixMatch",
    "torchssl": "implementations.torchssl.adapter:TorchSSLImplementation",
}

def load_implementation(name: str) -> Implementation:
    module_name, class_name = IMPLEMENTATIONS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def configure(name: str, config: TrainConfig) -> TrainConfig:
    """The configuration implementation `name` runs with, from the grid's."""
    if name == "own-as-torchssl":
        from implementations.ledger import TORCHSSL_CHOICES

        return config.replace(**TORCHSSL_CHOICES)
    return config


def fields_used(name: str, algorithm: str) -> frozenset[str]:
    """The TrainConfig fields implementation `name` reads for `algorithm`: what its runs are identified and
    recorded by, so that changing a field one implementation or algorithm never reads re-trains none of its runs."""
    from implementations.interface import fields_of_algorithm

    if name == "torchssl":
        from implementations.torchssl.adapter import CONFIG_FIELDS

        return CONFIG_FIELDS & fields_of_algorithm(algorithm)
    return fields_of_algorithm(algorithm)


def algorithms_of(name: str) -> tuple[str, ...]:
    """The algorithms implementation `name` has (interface.ALGORITHMS names)."""
    if name == "torchssl":
        from implementations.torchssl.algorithms import TORCHSSL_ALGORITHMS

        return tuple(TORCHSSL_ALGORITHMS)
    from implementations.own.methods import OWN_ALGORITHMS

    return OWN_ALGORITHMS


def unsupported_reason(name: str, config: TrainConfig, num_labels: int, num_classes: int) -> str | None:
    """Why implementation `name` cannot run this configuration of a method it has (algorithms_of), or None:
    own runs every configuration of its methods; TorchSSL refuses some (its adapter says which)."""
    if name == "torchssl":
        from implementations.torchssl.adapter import unsupported_reason as torchssl_reason

        return torchssl_reason(config, num_labels, num_classes)
    return None


def seconds_per_iteration(config: TrainConfig, data, labeled_indices) -> float:
    """An estimate of one training iteration's seconds on the config's device, for warning before a grid that
    would take days: own's step, measured here (TorchSSL's step is slower, so for it this is a lower bound)."""
    from implementations.own.trainer import seconds_per_iteration as own_seconds_per_iteration

    return own_seconds_per_iteration(config, data, labeled_indices)
