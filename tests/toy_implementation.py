"""A third implementation that joins through the registry alone (SSL_BENCH_IMPLEMENTATIONS), touching no harness
code: the nearest class mean of the labeled images, in numpy. Its run is a real one (it classifies the test set),
just not a semi-supervised one."""

from __future__ import annotations

import numpy as np

from implementations.interface import (EVAL_TOP1, ImageData, MetricsSink, RunInputs, RunResult, TrainConfig,
                                       fields_of_algorithm)


class NearestClassMean:
    name = "toy"
    compared_with = ()

    def algorithms(self) -> tuple[str, ...]:
        return ("supervised",)

    def configure(self, config: TrainConfig) -> TrainConfig:
        return config

    def fields_read(self, algorithm: str) -> frozenset[str]:
        return frozenset({"preset", "algorithm", "seed", "iterations"}) & fields_of_algorithm(algorithm)

    def refusal(self, config: TrainConfig, num_labels: int, num_classes: int) -> str | None:
        return None

    def check_ready(self) -> None:
        return None

    def provenance(self) -> dict[str, str]:
        return {"toy_version": "1"}

    def method_sheet(self, config: TrainConfig) -> dict:
        return {"algorithm": "nearest class mean", "aspects": [["loss", "none: class means of the labeled images"]],
                "traits": {}, "files": ["tests/toy_implementation.py"], "differences_from_torchssl": [],
                "defaults_differ_from_paper": []}

    def seconds_per_iteration(self, config: TrainConfig, data: ImageData, labeled_indices) -> float:
        return 0.0

    def train(self, run: RunInputs, sink: MetricsSink) -> RunResult:
        sink.checkpointed(0)
        data = run.data
        features = data.train_images[run.labeled_indices].reshape(len(run.labeled_indices), -1) / 255.0
        labels = data.train_labels[run.labeled_indices]
        means = np.stack([features[labels == c].mean(axis=0) for c in range(data.num_classes)])
        test = data.test_images.reshape(len(data.test_images), -1) / 255.0
        predicted = ((test[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
        top1 = float((predicted == data.test_labels).mean())
        for iteration in range(1, run.config.iterations + 1):
            sink.progress(iteration)
        sink.log_metrics({EVAL_TOP1: top1}, step=run.config.iterations)
        confusion = np.zeros((data.num_classes, data.num_classes), dtype=np.int64)
        np.add.at(confusion, (data.test_labels, predicted), 1)
        return RunResult(run.config.iterations, {EVAL_TOP1: top1}, top1, run.config.iterations, confusion)
