"""Everything the report shows, read from the MLflow store and nothing else.

`collect(...)` returns a `ReportData`: one row per child run (tags, params, status, iterations),
every metric history in long form (run_id, key, step, value), the confusion matrix of each run's
last evaluation and its environment.json. The layout it reads is the one harness/tracking/
writes (see the README: a parent run per label count and preset, a child per impl, labels, seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from harness import tracking
from implementations.common import first_line
from implementations.interface import (
    DEFAULT_EXPERIMENT,
    METRIC_PREFIXES,
    ROLE_EXECUTION,
    ROLE_RUN,
    SUMMARY_ITERATIONS,
    TrainConfig,
    config_fields,
)
from implementations.ledger import TORCHSSL_CHOICES

PAPER_ITERATIONS = 2**20
FINISHED = "FINISHED"
REPORTED_METRIC_PREFIXES = METRIC_PREFIXES

# TrainConfig fields that say which run it is or how it executes, not what it measures (their role on
# TrainConfig), and the fields where the implementations make their own choices (the difference ledger: shown per
# implementation, not pooled over). Every other field (any added later too) defines the protocol: runs that
# differ in one are never pooled.
EXECUTION_FIELDS = config_fields(ROLE_RUN) | config_fields(ROLE_EXECUTION)
IMPLEMENTATION_CHOICE_FIELDS = frozenset(TORCHSSL_CHOICES)
PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                        if f.name not in EXECUTION_FIELDS | IMPLEMENTATION_CHOICE_FIELDS)

_CONFUSION_ARTIFACT = re.compile(r"step_(\d+)\.json$")  # tracking.confusion_matrix_artifact(step)


class ReportError(ValueError):
    """A user-facing problem with the report's input; the message is one sentence."""


@dataclass(frozen=True)
class ConfusionMatrix:
    step: int
    class_names: tuple[str, ...]
    matrix: np.ndarray  # rows = true class, columns = predicted class (counts)


@dataclass
class ReportData:
    tracking_uri: str
    source: str  # what was asked for, e.g. "experiment 'cifar10-fixmatch'"
    runs: pd.DataFrame  # one row per child run; see _run_table for the columns
    histories: pd.DataFrame  # run_id, key, step, value; one value per (run, key, step)
    confusion: dict[str, ConfusionMatrix]  # run_id -> matrix at the run's last evaluation
    environments: dict[str, dict]  # run_id -> environment.json
    method_sheets: dict[str, dict]  # run_id -> method.json (implementations/method_sheet.py), when recorded
    params: dict[str, dict[str, str]]  # run_id -> every logged param
    _by_run_and_key: dict | None = dataclasses.field(default=None, repr=False)

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == FINISHED]

    @property
    def unfinished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] != FINISHED]

    def history(self, run_id: str, key: str) -> pd.Series:
        """The metric's values indexed by step (ascending); empty when never logged."""
        if self._by_run_and_key is None:
            self._by_run_and_key = {
                group_key: pd.Series(rows["value"].to_numpy(), index=rows["step"].to_numpy(), dtype=float)
                for group_key, rows in self.histories.groupby(["run_id", "key"], sort=False)
            }
        found = self._by_run_and_key.get((run_id, key))
        return found.rename(key) if found is not None else pd.Series(dtype=float, name=key)


def resolve_tracking_uri(tracking_uri: str | None, output_dir: Path) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the embedded sqlite store under output_dir
    (the same rule as `bench run`)."""
    return tracking.resolve_store(output_dir, tracking_uri).tracking_uri


def collect(tracking_uri: str, experiment: str | None = None, parent_run_id: str | None = None) -> ReportData:
    """The child runs of an experiment (or of one parent run) with their histories and artifacts."""
    _require_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        if parent_run_id:
            experiment_id, source = _parent_scope(client, parent_run_id)
            run_filter = f"tags.`{tracking.PARENT_RUN_ID_TAG}` = '{parent_run_id}'"
        else:
            experiment_id, source = _experiment_scope(client, experiment)
            run_filter = f"tags.`{tracking.ROLE_TAG}` = '{tracking.CHILD}'"
        frame = _search(client, experiment_id, run_filter)
        if frame.empty:
            raise ReportError(f"{source[0].upper()}{source[1:]} has no ssl-bench runs yet; "
                              "start some with `bench run`.")
        runs = _run_table(frame)
        params = {row["run_id"]: _prefixed(row, "params.") for _, row in frame.iterrows()}
        histories = _histories(client, frame)
        runs = _with_iterations(runs, histories)
        confusion, environments, method_sheets = _artifacts(client, runs["run_id"])
    except MlflowException as error:
        raise ReportError(f"Cannot read the MLflow store at {tracking_uri}: {first_line(error).rstrip('.')}.") from error
    return ReportData(tracking_uri, source, runs, histories, confusion, environments, method_sheets, params)


def _require_store(tracking_uri: str) -> None:
    """A missing sqlite file would be created empty by MLflow, a damaged one fail deep in a query, and a dead
    server be retried for minutes: each becomes one sentence here instead."""
    path = tracking.sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise ReportError(f"No MLflow store at {path}; run `bench run` first, or pass --output-dir or --tracking-uri.")
    try:
        tracking.check_reachable(tracking.TrackingStore(tracking_uri, artifact_root=None, embedded=False))
    except tracking.TrackingError as error:
        raise ReportError(str(error)) from None


def _experiment_scope(client: MlflowClient, name: str | None) -> tuple[str, str]:
    name = name or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        hint = f" (experiments in this store: {', '.join(known)})" if known else " (the store holds no experiments yet)"
        raise ReportError(f"No experiment named '{name}' in the MLflow store at {client.tracking_uri}{hint}.")
    return experiment.experiment_id, f"experiment '{name}'"


def _parent_scope(client: MlflowClient, run_id: str) -> tuple[str, str]:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ReportError(f"No run with id {run_id} in the MLflow store at {client.tracking_uri}.") from None
    tags = run.data.tags
    if tags.get(tracking.ROLE_TAG) != tracking.PARENT:
        parent = tags.get(tracking.PARENT_RUN_ID_TAG)
        hint = f"; its parent is {parent}" if parent else ""
        raise ReportError(f"Run {run_id} ({run.info.run_name}) is not an ssl-bench parent run{hint}.")
    return run.info.experiment_id, f"parent run {run_id} ({run.info.run_name})"


def _search(client: MlflowClient, experiment_id: str, run_filter: str) -> pd.DataFrame:
    """The runs as mlflow.search_runs lays them out (run_id, status, metrics.*, params.*, tags.*), read
    through this client: mlflow.search_runs would need the process-wide tracking URI changed."""
    rows = []
    page_token = None
    while True:
        page = client.search_runs([experiment_id], run_filter, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=page_token)
        for run in page:
            row = {"run_id": run.info.run_id, "status": run.info.status, "end_time": run.info.end_time or 0,
                   "start_time": run.info.start_time or 0}
            row.update({f"metrics.{key}": value for key, value in run.data.metrics.items()})
            row.update({f"params.{key}": value for key, value in run.data.params.items()})
            row.update({f"tags.{key}": value for key, value in run.data.tags.items()})
            rows.append(row)
        page_token = page.token
        if not page_token:
            return pd.DataFrame(rows)


def _prefixed(row: pd.Series, prefix: str) -> dict[str, str]:
    return {key[len(prefix):]: value for key, value in row.items() if key.startswith(prefix) and isinstance(value, str)}


def _run_table(frame: pd.DataFrame) -> pd.DataFrame:
    def tag(name: str, default: str = "") -> pd.Series:
        column = f"tags.{name}"
        return frame[column].fillna(default).astype(str) if column in frame else pd.Series(default, index=frame.index)

    def param(name: str) -> pd.Series:
        column = f"params.{name}"
        return frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=object)

    runs = pd.DataFrame({
        "run_id": frame["run_id"],
        "run_name": tag("mlflow.runName"),
        "parent_run_id": tag(tracking.PARENT_RUN_ID_TAG),
        "impl": tag("impl", "?"),
        "labels": pd.to_numeric(tag("labels"), errors="coerce").astype("Int64"),
        "seed": pd.to_numeric(tag("seed"), errors="coerce").astype("Int64"),
        "preset": tag("preset", "?"),
        "status": frame["status"].astype(str),
        "split_digest": tag("split_digest"),
        "data_identity": tag("data_identity", "unrecorded"),
        "data_official": tag("data_official").str.lower().map({"true": True, "false": False}),
        "git_commit": tag("git_commit"),
        "git_dirty": tag("git_dirty"),
        "torchssl_commit": tag("torchssl_commit"),
        "torchssl_tree_clean": tag("torchssl_tree_clean"),
        "torchssl_resume_gap": tag("torchssl_resume_gap"),
        "torchssl_resumed_from": tag("torchssl_resumed_from"),
        "algorithm": tag("algorithm", "fixmatch"),
        "tf32_training": tag("tf32_training", "not recorded"),
        "tf32_evaluation": tag("tf32_evaluation", "not recorded"),
        "error": tag(tracking.ERROR_TAG),
        "iterations_planned": pd.to_numeric(param("iterations"), errors="coerce").astype("Int64"),
        "eval_interval": pd.to_numeric(param("eval_interval"), errors="coerce").astype("Int64"),
        "end_time": frame["end_time"].fillna(0).astype("int64"),
        "start_time": frame["start_time"].fillna(0).astype("int64"),  # ms since the epoch, as MLflow keeps it
    })
    protocol = [param(name).fillna("?").astype(str) for name in PROTOCOL_FIELDS]
    runs["protocol"] = [tuple(values) for values in zip(*protocol)] if protocol else [()] * len(runs)
    return runs.sort_values(["preset", "labels", "impl", "seed"], kind="stable").reset_index(drop=True)


def _histories(client: MlflowClient, frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    metric_columns = [column for column in frame.columns
                      if column.startswith(tuple("metrics." + prefix for prefix in REPORTED_METRIC_PREFIXES))]
    for _, run in frame.iterrows():
        for column in metric_columns:
            if pd.isna(run[column]):
                continue
            key = column[len("metrics."):]
            for metric in client.get_metric_history(run["run_id"], key):
                rows.append((run["run_id"], key, int(metric.step), int(metric.timestamp), float(metric.value)))
    histories = pd.DataFrame(rows, columns=["run_id", "key", "step", "timestamp", "value"])
    # A step logged twice (e.g. around a resume) counts once: the value logged last.
    histories = histories.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    histories = histories.drop_duplicates(["run_id", "key", "step"], keep="last")
    return histories.drop(columns="timestamp").reset_index(drop=True)


def _with_iterations(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """iterations_run: summary/iterations when the run logged it, else the last step of any metric."""
    last_step = histories.groupby("run_id")["step"].max()
    summary = histories[histories["key"] == SUMMARY_ITERATIONS].groupby("run_id")["value"].last()
    runs = runs.copy()
    runs["iterations_run"] = [
        int(summary[run_id]) if run_id in summary else int(last_step.get(run_id, 0)) for run_id in runs["run_id"]
    ]
    return runs


def _artifacts(client: MlflowClient, run_ids: pd.Series) -> tuple[dict[str, ConfusionMatrix], dict[str, dict],
                                                                 dict[str, dict]]:
    confusion: dict[str, ConfusionMatrix] = {}
    environments: dict[str, dict] = {}
    method_sheets: dict[str, dict] = {}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise here
    with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
        def read_json(run_id: str, path: str) -> dict:
            return json.loads(Path(client.download_artifacts(run_id, path, os.path.join(scratch, run_id))).read_text())

        for run_id in run_ids:
            files = client.list_artifacts(run_id, "confusion_matrix")
            steps = {int(m.group(1)): info.path for info in files if (m := _CONFUSION_ARTIFACT.search(info.path))}
            if steps:
                content = read_json(run_id, steps[max(steps)])
                confusion[run_id] = ConfusionMatrix(
                    int(content["step"]), tuple(content["class_names"]), np.asarray(content["matrix"], dtype=np.int64)
                )
            top_level = {info.path for info in client.list_artifacts(run_id)}
            if "environment.json" in top_level:
                environments[run_id] = read_json(run_id, "environment.json")
            if tracking.METHOD_SHEET_ARTIFACT in top_level:
                method_sheets[run_id] = read_json(run_id, tracking.METHOD_SHEET_ARTIFACT)
    return confusion, environments, method_sheets


