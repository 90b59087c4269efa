"""The metrics sink an implementation logs through: batched, and sent to MLflow only once a checkpoint covers
them (the journal keeps what was sent); the confusion matrices."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from harness.tracking.store import TrackingError, chunks
from implementations.common import first_line, write_text_atomically
from implementations.interface import SUMMARY_PREFIX

# --- the metrics sink -----------------------------------------------------------------------------------


def highest_logged_steps(client: MlflowClient, run_id: str) -> dict[str, int]:
    """For each metric key of the run, the highest step already in the store."""
    run = client.get_run(run_id)
    # `run.data` holds, per key, the latest value, i.e. the one at the highest step; reading its step
    # costs one query, where get_metric_history would load every point of every key.
    metric_objects = getattr(run.data, "_metric_objs", None)
    if metric_objects is not None:
        return {metric.key: metric.step for metric in metric_objects}
    return {key: max(point.step for point in client.get_metric_history(run_id, key)) for key in run.data.metrics}


class MetricsJournal:
    """A run's metrics and confusion matrices waiting in its work dir (JSON lines) until a checkpoint covers
    them. A kill can tear only the line being written, which is then ignored."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def append(self, entry: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def entries(self) -> list[dict]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:  # the line a kill tore
                continue
        return entries

    def replace(self, entries: list[dict]) -> None:
        write_text_atomically(self.path, "".join(json.dumps(entry) + "\n" for entry in entries))


class SinkListener(Protocol):
    """Who hears of a run's numbers as they are logged (the worker's progress events)."""

    def on_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def on_progress(self, iteration: int) -> None: ...

    def on_checkpoint(self, iteration: int) -> None: ...


class MlflowMetricsSink:
    """The `MetricsSink` the harness gives an implementation.

    One history per run: every number first goes to the run's journal in its work dir and reaches MLflow only
    when the implementation reports a durable checkpoint covering it (`checkpointed`), as one `log_batch` per
    checkpoint. A killed attempt's numbers after its last checkpoint are dropped when the next attempt
    resumes from that checkpoint, so MLflow never holds points of an abandoned attempt. When the store cannot
    be reached, the numbers wait in the journal and go with the next checkpoint (or the next `bench run`);
    training goes on. No (key, step) already in the store is logged again.
    """

    def __init__(self, client: MlflowClient, run_id: str, class_names: tuple[str, ...], journal_path: Path | str,
                 listener: "SinkListener | None" = None):
        self.client = client
        self.run_id = run_id
        self.class_names = tuple(class_names)
        self.journal = MetricsJournal(journal_path)
        self.listener = listener
        self._highest_step = highest_logged_steps(client, run_id)
        self.unsent_reason: str | None = None  # why the last send failed, while entries wait
        self._resumed = False

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.journal.append({"step": int(step), "time": int(time.time() * 1000),
                             "metrics": {key: float(value) for key, value in metrics.items()}})
        if self.listener is not None:
            self.listener.on_metrics(metrics, int(step))

    def log_confusion_matrix(self, matrix: np.ndarray, step: int) -> None:
        self.journal.append({"step": int(step), "confusion": np.asarray(matrix).astype(int).tolist()})

    def checkpointed(self, iteration: int) -> None:
        """Send what the checkpoint of `iteration` covers; drop what an interrupted attempt logged beyond it."""
        if not self._resumed:  # the first call says where this attempt starts
            self._resumed = True
            self._refuse_to_splice(iteration)
        covered = [entry for entry in self.journal.entries() if entry["step"] <= iteration]
        unsent = self._send(covered)
        self.journal.replace(unsent)
        if self.listener is not None:
            self.listener.on_checkpoint(int(iteration))

    def progress(self, iteration: int) -> None:
        if self.listener is not None:
            self.listener.on_progress(int(iteration))

    def _refuse_to_splice(self, start: int) -> None:
        """MLflow holds only what checkpoints covered; numbers beyond this attempt's starting checkpoint mean the
        checkpoint is older than the history (deleted, or replaced by hand): continuing would mix two attempts."""
        logged = [step for key, step in self._highest_step.items() if not key.startswith(("system/", SUMMARY_PREFIX))]
        if logged and max(logged) > start:
            raise TrackingError(
                f"MLflow run {self.run_id} already holds numbers up to iteration {max(logged)}, but its checkpoint in "
                f"{self.journal.path.parent} starts at iteration {start}: continuing would splice two attempts; "
                f"delete the folder {self.journal.path.parent} and run the same `bench run` again, which restarts "
                "this run in a new MLflow run and moves the old one to MLflow's trash.")

    def flush(self) -> None:
        """Send everything in the journal (the run has ended); raises TrackingError when the store is unreachable."""
        unsent = self._send(self.journal.entries())
        self.journal.replace(unsent)
        if unsent:
            raise TrackingError(f"{len(unsent)} logged values of run {self.run_id} wait in {self.journal.path}: "
                                f"the store cannot be reached ({self.unsent_reason}).")

    def _send(self, entries: list[dict]) -> list[dict]:
        """Log the entries; those that could not be sent are returned."""
        try:
            metrics = [Metric(key, value, entry["time"], entry["step"])
                       for entry in entries if "metrics" in entry
                       for key, value in entry["metrics"].items()
                       if entry["step"] > self._highest_step.get(key, -1)]
            for chunk in chunks(metrics, MAX_METRICS_PER_BATCH):
                self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
                for metric in chunk:  # sent: never again, even when a later chunk fails
                    self._highest_step[metric.key] = max(metric.step, self._highest_step.get(metric.key, -1))
            for entry in entries:
                if "confusion" in entry:
                    document = {"step": entry["step"], "class_names": list(self.class_names), "matrix": entry["confusion"]}
                    self.client.log_text(self.run_id, json.dumps(document), confusion_matrix_artifact(entry["step"]))
        except Exception as error:  # an unreachable server, a locked database: the entries wait for the next try
            self.unsent_reason = first_line(error)
            print(f"--- MLflow could not take {len(entries)} journal entries ({self.unsent_reason}); they wait in "
                  f"{self.journal.path}", file=sys.stderr, flush=True)
            return entries
        self.unsent_reason = None
        return []


def log_metrics_at(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Metrics of a finished run (its summary), in one batch."""
    timestamp = int(time.time() * 1000)
    entries = [Metric(key, float(value), timestamp, int(step)) for key, value in metrics.items()]
    for chunk in chunks(entries, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk, synchronous=True)


def confusion_matrix_artifact(step: int) -> str:
    return f"confusion_matrix/step_{int(step):08d}.json"


def log_confusion_matrix_figure(client: MlflowClient, run_id: str, matrix: np.ndarray,
                                class_names: tuple[str, ...], title: str) -> None:
    """The final confusion matrix as `confusion_matrix/final.png` (row-normalised colours, counts written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    row_totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, dtype=float), where=row_totals > 0)
    figure, axes = plt.subplots(figsize=(7.5, 6.5), layout="constrained")
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for true_class in range(matrix.shape[0]):
        for predicted_class in range(matrix.shape[1]):
            axes.text(predicted_class, true_class, str(matrix[true_class, predicted_class]), ha="center",
                      va="center", fontsize=8, color="white" if rates[true_class, predicted_class] > 0.5 else "black")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="fraction of the true class")
    try:
        client.log_figure(run_id, figure, "confusion_matrix/final.png")
    finally:
        plt.close(figure)
