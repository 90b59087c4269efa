"""Benchmark: what the paper preset's evaluation every 1,024 iterations costs, in time and in store size.

1. Time: the own evaluator on WRN-28-2 (the paper preset's model, fp32, channels_last) over the real test
   images, repeated; scaled to CIFAR-10's 10,000 test images when the data holds fewer.
2. Store: the real MLflow sink into a fresh sqlite store: the bytes one evaluation (its metrics and its
   confusion-matrix artifact) and one training-signal log window add to the database and the artifact
   folder, measured over many of each.
Then the totals for a paper-length run (2^20 iterations: 1,024 evaluations, 8,192 log windows), beside the
training time those 1,024 intervals take at the paper step time measured on this machine (README).

    python benchmarks/evaluation_cost.py [--repeats 3] [--evaluations 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import SUBSET_DIR, KeepingSink

from harness import tracking
from harness.data import load_cifar10
from harness.presets import resolve_preset
from harness.splits import draw_split
from implementations import interface
from implementations.interface import RunInputs
from implementations.own.trainer import Evaluator, OwnTraining, Progress

PAPER_ITERATIONS = 2**20
TEST_IMAGES = 10_000


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=200)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    config = resolve_preset("paper", device="cpu")
    data = load_cifar10(SUBSET_DIR)
    split = draw_split(data.train_labels, 40, 0, data.num_classes, data.identity)

    with tempfile.TemporaryDirectory() as work_dir:
        run = RunInputs(config, data, split.labeled_indices, split.digest, Path(work_dir))
        device = torch.device("cpu")
        training = OwnTraining(config, data.num_classes, len(data.train_images), device)
        evaluator = Evaluator(run, device)
        evaluator.evaluate(training.ema.module, Progress(), KeepingSink())  # warm-up
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            evaluator.evaluate(training.ema.module, Progress(), KeepingSink())
            seconds.append(time.perf_counter() - started)
    per_evaluation = statistics.median(seconds) * TEST_IMAGES / len(data.test_labels)
    print(f"evaluation, WRN-28-2 fp32 on this CPU: {statistics.median(seconds):.1f} s for {len(data.test_labels):,} "
          f"test images (repeats {', '.join(f'{s:.1f}' for s in seconds)}) → {per_evaluation:.0f} s for {TEST_IMAGES:,}")

    metrics = {interface.EVAL_TOP1: 0.5, interface.EVAL_TOP5: 0.9, interface.EVAL_PRECISION: 0.5, interface.EVAL_RECALL: 0.5,
               interface.EVAL_F1: 0.5, interface.EVAL_AUC: 0.9, interface.EVAL_LOSS: 1.0,
               **{interface.EVAL_CLASS_ACCURACY_PREFIX + name: 0.5 for name in data.class_names}}
    signals = {interface.TRAIN_SUPERVISED_LOSS: 1.0, interface.TRAIN_UNSUPERVISED_LOSS: 0.5, interface.TRAIN_TOTAL_LOSS: 1.5,
               interface.TRAIN_MASK_RATE: 0.3, interface.TRAIN_PSEUDO_LABEL_ACCURACY: 0.8, interface.TRAIN_LR: 0.03,
               interface.TRAIN_ITERATIONS_PER_SECOND: 10.0, interface.TRAIN_DATA_WAIT_SECONDS: 0.001}
    confusion = np.full((10, 10), 100)
    with tempfile.TemporaryDirectory() as folder:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        store = tracking.resolve_store(Path(folder) / "runs")
        client = store.client()
        experiment = tracking.get_or_create_experiment(client, "cost", store.artifact_root)
        artifacts = Path(folder) / "runs" / "artifacts"

        def sizes() -> tuple[int, int]:
            return (Path(folder, "runs", "mlflow.db").stat().st_size,
                    folder_bytes(artifacts) if artifacts.exists() else 0)

        run_id = client.create_run(experiment).info.run_id
        sink = tracking.MlflowMetricsSink(client, run_id, data.class_names, Path(folder) / "journal.jsonl")
        sink.checkpointed(0)
        before = sizes()
        for step in range(1, args.evaluations + 1):
            sink.log_metrics(metrics, step=step * 1024)
            sink.log_confusion_matrix(confusion, step=step * 1024)
            sink.checkpointed(step * 1024)
        after_evaluations = sizes()
        for step in range(1, 8 * args.evaluations + 1):
            sink.log_metrics(signals, step=step * 128)
            if step % 8 == 0:
                sink.checkpointed(step * 128)
        after_windows = sizes()
    database_per_evaluation = (after_evaluations[0] - before[0]) / args.evaluations
    artifacts_per_evaluation = (after_evaluations[1] - before[1]) / args.evaluations
    database_per_window = (after_windows[0] - after_evaluations[0]) / (8 * args.evaluations)
    evaluations, windows = PAPER_ITERATIONS // 1024, PAPER_ITERATIONS // 128
    total = evaluations * (database_per_evaluation + artifacts_per_evaluation) + windows * database_per_window
    print(f"store, per evaluation: {database_per_evaluation / 1024:.1f} KiB of sqlite + "
          f"{artifacts_per_evaluation / 1024:.1f} KiB of confusion-matrix artifact; per log window "
          f"{database_per_window / 1024:.2f} KiB of sqlite")
    print(f"a paper-length run ({evaluations:,} evaluations, {windows:,} log windows): {total / 2**20:.0f} MiB in the "
          f"store; {evaluations * per_evaluation / 3600:.1f} h of evaluation on this CPU")


if __name__ == "__main__":
    main()
