"""The own implementation behind the interface: each method written from its paper (methods.py lists them),
trained by the one loop in trainer.py. `own-as-torchssl` is the same code with every switch of the difference
ledger at TorchSSL's choice. Importing this module imports no torch: training does."""

from __future__ import annotations

from implementations.interface import ImageData, MetricsSink, RunInputs, RunResult, TrainConfig, fields_of_algorithm
from implementations.ledger import TORCHSSL_CHOICES
from implementations.own.methods import OWN_ALGORITHMS


class Own:
    name = "own"
    # Own against TorchSSL's code, and against itself at TorchSSL's choices: what the ledger's choices change.
    compared_with = ("torchssl", "own-as-torchssl")

    def algorithms(self) -> tuple[str, ...]:
        return OWN_ALGORITHMS

    def configure(self, config: TrainConfig) -> TrainConfig:
        return config

    def fields_read(self, algorithm: str) -> frozenset[str]:
        return fields_of_algorithm(algorithm)

    def refusal(self, config: TrainConfig, num_labels: int, num_classes: int) -> str | None:
        return None  # every configuration of its methods runs

    def check_ready(self) -> None:
        return None

    def provenance(self) -> dict[str, str]:
        return {}  # its code is this project's, whose commit every run records

    def method_sheet(self, config: TrainConfig) -> dict:
        from implementations.method_sheet import own_method_sheet

        return own_method_sheet(config).as_json()

    def seconds_per_iteration(self, config: TrainConfig, data: ImageData, labeled_indices) -> float:
        from implementations.own.trainer import seconds_per_iteration

        return seconds_per_iteration(config, data, labeled_indices)

    def train(self, run: RunInputs, sink: MetricsSink) -> RunResult:
        from implementations.own.trainer import OwnTrainer

        return OwnTrainer().train(run, sink)


class OwnAsTorchSSL(Own):
    name = "own-as-torchssl"
    compared_with = ("torchssl",)  # the same choices: what is left is the code

    def configure(self, config: TrainConfig) -> TrainConfig:
        return config.replace(**TORCHSSL_CHOICES)
