"""Shared pieces of the benchmark scripts: real data, a split, a sink that keeps numbers."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBSET_DIR = REPO_ROOT.parent / "shared" / "data" / "cifar10-subset"
sys.path.insert(0, str(REPO_ROOT))

from harness.data import load_cifar10  # noqa: E402
from harness.splits import draw_split  # noqa: E402
from implementations.interface import RunInputs, TrainConfig  # noqa: E402


class KeepingSink:
    def __init__(self):
        self.metrics: dict[str, dict[int, float]] = {}

    def log_metrics(self, metrics, step):
        for key, value in metrics.items():
            self.metrics.setdefault(key, {})[step] = value

    def log_confusion_matrix(self, matrix, step):
        pass

    def checkpointed(self, iteration):
        pass

    def progress(self, iteration):
        pass


def subset_run_inputs(config: TrainConfig, work_dir: Path, num_labels: int = 40,
                      data_dir: Path = SUBSET_DIR) -> RunInputs:
    data = load_cifar10(data_dir)
    split = draw_split(data.train_labels, num_labels, config.seed, data.num_classes, data.identity)
    return RunInputs(config, data, split.labeled_indices, split.digest, work_dir)


def peak_rss_mib() -> float:
    """Peak resident memory of this process and of any child it waited for, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024
