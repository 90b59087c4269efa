"""Everything a run records in MLflow, and where the MLflow store is.

The layout (read back by harness/report):
- one experiment (default "cifar10-fixmatch"); embedded store `sqlite:///<output_dir>/mlflow.db`
  with artifacts under `<output_dir>/artifacts`; `MLFLOW_TRACKING_URI` or `--tracking-uri` overrides;
- one PARENT run per (algorithm, label count, preset): name "fixmatch · labels=40 · smoke", tags
  `ssl_bench.role=parent`, `algorithm`, `labels`, `preset`;
- one CHILD run per (algorithm, impl, labels, seed) under its parent: name "fixmatch/own/40/s0", tags
  `ssl_bench.role=child`, `impl`, `algorithm`, `labels`, `seed`, `split_digest`, `preset`, `run_key`, `data_identity`,
  `data_official`, `git_commit`, `git_dirty` (+ `torchssl_commit`, `torchssl_tree_clean`); params = the
  resolved TrainConfig fields the implementation reads + `labels` (a TorchSSL run adds `torchssl.*`, its
  arguments, and `torchssl_fixed.*`, its fixed choices); metrics under the interface.py names with step =
  iteration, sent when a checkpoint covers them (`MlflowMetricsSink`); artifacts
  `confusion_matrix/step_<iteration:08d>.json`, `confusion_matrix/final.png`, `split/labeled_indices.npy`,
  `split/split.json`, `environment.json`, `method.json` (the method sheet); the split as a dataset input whose
  digest is the split digest.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol

import numpy as np
from mlflow.entities import Metric, Param, Run, RunTag, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from implementations.common import first_line, write_text_atomically

DEFAULT_EXPERIMENT = "cifar10-fixmatch"
STORE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "artifacts"

ROLE_TAG = "ssl_bench.role"
ERROR_TAG = "ssl_bench.error"  # why a run ended FAILED or KILLED; removed when it finishes
PARENT, CHILD = "parent", "child"

# System metrics (CPU/RAM/disk/network, GPU when present): sampled every 10 s, logged as the
# mean of 6 samples, so a week-long run adds ~10k points per metric rather than one per second.
SYSTEM_METRICS_SAMPLING_SECONDS = 10
SYSTEM_METRICS_SAMPLES_PER_LOG = 6

ENVIRONMENT_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "pillow": "Pillow", "numpy": "numpy",
                        "mlflow": "mlflow"}


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one sentence for the user."""


# --- where the store is ---------------------------------------------------------------------------------


# A SQLite store takes one writer at a time; with several runners and workers on one store, a writer may find
# it locked. Each call is retried, with growing pauses, for at most this long.
LOCKED_STORE_WAIT_SECONDS = 120.0


# Errors another writer causes that the same call gets past when repeated: a locked SQLite file, and two runs
# logging the same split at once (both see no dataset row, both insert it; repeated, the call finds it).
_TRANSIENT_ERRORS = ("database is locked", "UNIQUE constraint failed: datasets.")


def _is_locked(error: BaseException) -> bool:
    while error is not None:
        if any(text in str(error) for text in _TRANSIENT_ERRORS):
            return True
        error = error.__cause__ or error.__context__
    return False


def retry_while_locked(action: Callable[[], object]) -> object:
    """`action()`, repeated while the SQLite store is locked by another process, for a bounded time."""
    deadline = time.monotonic() + LOCKED_STORE_WAIT_SECONDS
    pause = 0.05
    while True:
        try:
            return action()
        except Exception as error:
            if not _is_locked(error):
                raise
            if time.monotonic() > deadline:
                raise TrackingError(
                    f"The MLflow store stayed locked by another process for {LOCKED_STORE_WAIT_SECONDS:.0f} s "
                    f"({first_line(error)}); run fewer `bench run` at once on it, or serve it with `mlflow server` "
                    "and pass --tracking-uri.") from None
            time.sleep(pause * random.uniform(1.0, 2.0))
            pause = min(2 * pause, 2.0)


class LockRetryingClient:
    """An MlflowClient whose every call is retried while a SQLite store is locked (`retry_while_locked`)."""

    def __init__(self, tracking_uri: str):
        self._client = MlflowClient(tracking_uri=tracking_uri)

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args, **kwargs):
            return retry_while_locked(lambda: attribute(*args, **kwargs))

        return call


@dataclass(frozen=True)
class TrackingStore:
    tracking_uri: str
    artifact_root: str | None  # artifact location of experiments we create; None: the store decides
    embedded: bool  # the sqlite database under the output dir (no server involved)

    def client(self) -> LockRetryingClient:
        return LockRetryingClient(self.tracking_uri)

    @property
    def is_server(self) -> bool:
        return urllib.parse.urlparse(self.tracking_uri).scheme in ("http", "https")


def resolve_store(output_dir: Path | str, tracking_uri: str | None = None) -> TrackingStore:
    """`tracking_uri`, else `MLFLOW_TRACKING_URI`, else the embedded sqlite store under `output_dir`."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri:
        return TrackingStore(tracking_uri=uri, artifact_root=None, embedded=False)
    output_dir = Path(output_dir).resolve()
    return TrackingStore(
        tracking_uri=f"sqlite:///{output_dir / STORE_FILE}",
        artifact_root=(output_dir / ARTIFACTS_FOLDER).as_uri(),
        embedded=True,
    )


def check_reachable(store: TrackingStore, timeout_seconds: float = 5.0) -> None:
    """Fail fast, in one sentence, when the store cannot be reached (MLflow's own client would retry
    an unreachable server for minutes)."""
    if store.embedded:
        database = Path(store.tracking_uri.removeprefix("sqlite:///"))
        if not database.exists():
            return  # the runner creates it under the store lock, once the whole grid has been checked
        try:
            with store_lock(database.parent):  # wait while another runner is still creating it
                store.client().search_experiments(max_results=1)  # opening it completes a half-made store
        except Exception as error:
            raise TrackingError(f"The MLflow store {database} cannot be opened ({first_line(error)}); if it is "
                                "damaged, move it aside (its runs are then gone from the UI and reports) or choose "
                                "another --output-dir.") from None
        return
    if store.is_server:
        import requests

        url = store.tracking_uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
        try:
            response = requests.get(url, params={"max_results": 1}, timeout=timeout_seconds)
        except requests.RequestException as error:
            reason = type(error).__name__ if not str(error) else first_line(error)
            raise TrackingError(f"The MLflow tracking server at {store.tracking_uri} is not reachable ({reason}).") from None
        if response.status_code in (401, 403):
            raise TrackingError(f"The MLflow tracking server at {store.tracking_uri} refused access "
                                f"(HTTP {response.status_code}); set MLFLOW_TRACKING_TOKEN or "
                                "MLFLOW_TRACKING_USERNAME/PASSWORD.")
        if response.status_code != 200:
            raise TrackingError(f"{store.tracking_uri} does not answer as an MLflow tracking server "
                                f"(HTTP {response.status_code} from {url}).")
        return
    try:
        store.client().search_experiments(max_results=1)
    except Exception as error:  # any store backend may fail in its own way
        raise TrackingError(f"The MLflow tracking store {store.tracking_uri} cannot be opened ({first_line(error)}).") from None


STORE_LOCK = "store.lock"


@contextlib.contextmanager
def store_lock(output_dir: Path):
    """Exclusive among the `bench run` processes of this output dir: for creating the embedded store, and for
    finding or creating runs, so that each exists once."""
    import fcntl

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / STORE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- experiment, parent and child runs ------------------------------------------------------------------


# MLflow 3's UI opens an experiment of this kind on its training runs, not on the GenAI overview.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
CHILD_RUNS_FILTER = f"tags.`{ROLE_TAG}` = '{CHILD}'"


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = f"{artifact_root.rstrip('/')}/{safe_folder_name(name)}" if artifact_root else None
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(f"The experiment '{name}' is deleted in {client.tracking_uri}; restore it "
                            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                            "or choose another --experiment.")
    return experiment.experiment_id


def mark_as_model_training(client: MlflowClient, experiment) -> None:
    if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def safe_folder_name(name: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in name)


def search_runs_by_tags(client: MlflowClient, experiment_id: str, tags: Mapping[str, object]) -> list[Run]:
    """Active runs of the experiment whose tags have exactly these values (newest first)."""
    clauses = [f"tags.`{key}` = '{_quote(value)}'" for key, value in tags.items()]
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs([experiment_id], " and ".join(clauses), run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, order_by=["attributes.start_time DESC"], page_token=page_token)
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def _quote(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def parent_run_name(labels: int, preset: str, algorithm: str = "fixmatch") -> str:
    return f"{algorithm} · labels={labels} · {preset}"


def child_run_name(impl: str, labels: int, seed: int, algorithm: str = "fixmatch") -> str:
    """Short enough for the MLflow UI's name column: "fixmatch/own/4000/s2"."""
    return f"{algorithm}/{impl}/{labels}/s{seed}"


def find_or_create_parent_run(client: MlflowClient, experiment_id: str, labels: int, preset: str,
                              algorithm: str = "fixmatch") -> str:
    """The parent run of (algorithm, labels, preset): found again by its tags on every later `bench run`."""
    tags = {ROLE_TAG: PARENT, "algorithm": algorithm, "labels": labels, "preset": preset}
    found = search_runs_by_tags(client, experiment_id, tags)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, tags={key: str(value) for key, value in tags.items()},
                            run_name=parent_run_name(labels, preset, algorithm))
    return run.info.run_id


def find_child_run(client: MlflowClient, experiment_id: str, run_key: str) -> Run | None:
    found = search_runs_by_tags(client, experiment_id, {ROLE_TAG: CHILD, "run_key": run_key})
    finished = [run for run in found if run.info.status == "FINISHED"]
    return (finished or found or [None])[0]


def create_child_run(client: MlflowClient, experiment_id: str, parent_run_id: str, run_name: str,
                     tags: Mapping[str, object]) -> str:
    """A child run, created when its worker is about to start: its MLflow start time is its own."""
    all_tags = {ROLE_TAG: CHILD, MLFLOW_PARENT_RUN_ID: parent_run_id, **tags}
    run = client.create_run(experiment_id, tags={key: str(value) for key, value in all_tags.items()},
                            run_name=run_name)
    return run.info.run_id


def record_error(client: MlflowClient, run_id: str, status: str, message: str) -> None:
    """Say why a run ends FAILED/KILLED: a tag (searchable) and the run's note (shown in the UI)."""
    log_tags(client, run_id, {ERROR_TAG: message[:5000], MLFLOW_RUN_NOTE: f"**{status}**: {message}"})


def end_run_with_error(client: MlflowClient, run_id: str, status: str, message: str) -> None:
    record_error(client, run_id, status, message)
    client.set_terminated(run_id, status)


def clear_error(client: MlflowClient, run: Run) -> None:
    """A resumed run starts without the error of its previous attempt."""
    for key in (ERROR_TAG, MLFLOW_RUN_NOTE):
        if key in run.data.tags:
            client.delete_tag(run.info.run_id, key)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    """Params (immutable in MLflow: logging the same value again on resume is a no-op)."""
    entries = [Param(key, _param_text(value)) for key, value in params.items()]
    for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def log_params_once(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    """Params not yet in the run. A resumed run keeps the values it started with: the run key covers
    every hyper-parameter except how it executes (plan.NOT_IDENTITY: the device, a compiled augmentation), so a
    resume may differ only there, which is then recorded as the tag `resumed_with.<param>`."""
    logged = client.get_run(run_id).data.params
    log_params(client, run_id, {key: value for key, value in params.items() if key not in logged})
    log_tags(client, run_id, {f"resumed_with.{key}": _param_text(value) for key, value in params.items()
                              if key in logged and logged[key] != _param_text(value)})


def log_tags(client: MlflowClient, run_id: str, tags: Mapping[str, object]) -> None:
    entries = [RunTag(key, str(value)) for key, value in tags.items()]
    for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk)


def _param_text(value: object) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


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
        logged = [step for key, step in self._highest_step.items() if not key.startswith(("system/", "summary/"))]
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
            for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
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
    for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
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


# --- the split ------------------------------------------------------------------------------------------


# MLflow refuses dataset digests longer than 36 characters: the dataset input carries the first 36 hex
# digits of the split digest (144 bits), and the full digest as its `split_digest` input tag.
DATASET_DIGEST_LENGTH = 36


def dataset_digest(split_digest: str) -> str:
    return split_digest[:DATASET_DIGEST_LENGTH]


def log_split(client: MlflowClient, run_id: str, split, split_path: Path | str) -> None:
    """The split's files as `split/labeled_indices.npy` + `split/split.json`, and the split as the run's
    "train" dataset input whose digest is the split digest (its first 36 hex digits, MLflow's limit).
    Logged once per run (skipped on resume)."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    run = client.get_run(run_id)
    if any(dataset_input.dataset.digest == dataset_digest(split.digest) for dataset_input in run.inputs.dataset_inputs):
        return
    stem = Path(split_path)
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(stem.with_name(stem.name + ".npy"), Path(folder) / "labeled_indices.npy")
        shutil.copyfile(stem.with_name(stem.name + ".json"), Path(folder) / "split.json")
        client.log_artifacts(run_id, folder, "split")
    with warnings.catch_warnings():  # MLflow registers its local-file source twice and warns about it
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(
            np.asarray(split.labeled_indices), source=str(stem.with_name(stem.name + ".npy").resolve()),
            name=f"{split.dataset_identity} labeled split, {split.num_labels} labels, seed {split.seed}",
            digest=dataset_digest(split.digest),
        )
    input_tags = [InputTag(MLFLOW_DATASET_CONTEXT, "train"), InputTag("split_digest", split.digest)]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=input_tags)])


# --- code version and environment -----------------------------------------------------------------------


def git_info(path: Path | str | None = None) -> dict[str, str]:
    """`git_commit` and `git_dirty` of the repository holding `path` (default: this project's source);
    "unknown" for both when it is not a git checkout (e.g. installed from a wheel) or git is absent."""
    path = Path(path) if path is not None else Path(__file__).resolve().parents[1]
    try:
        import git

        repository = git.Repo(path, search_parent_directories=True)
        return {"git_commit": repository.head.commit.hexsha,
                "git_dirty": str(repository.is_dirty(untracked_files=False)).lower()}
    except Exception:  # ImportError without a git binary, InvalidGitRepositoryError, ValueError without commits
        return {"git_commit": "unknown", "git_dirty": "unknown"}


def environment_info(device: str = "auto") -> dict[str, object]:
    """Versions of what computes the numbers, and the hardware they were computed on."""
    import torch

    cuda = torch.cuda.is_available()
    resolved_device = ("cuda" if cuda else "cpu") if device == "auto" else device
    info: dict[str, object] = {"python": platform.python_version()}
    for key, distribution in ENVIRONMENT_PACKAGES.items():
        try:
            info[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            info[key] = "absent"
    info.update({
        "platform": platform.platform(),
        "device": resolved_device,
        "device_name": torch.cuda.get_device_name(0) if resolved_device.startswith("cuda") else _cpu_name(),
        "cpu_count": os.cpu_count() or 0,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cuda": torch.version.cuda or "none",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),  # the GPU the launcher gave it
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES") or "none",  # the malloc settings of the run process
    })
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log_environment(client: MlflowClient, run_id: str, info: Mapping[str, object]) -> None:
    """`environment.json` plus one `env.<name>` tag per entry (tags, not params: a resumed run may
    continue on another machine, and the latest attempt's environment is what the tags show)."""
    client.log_text(run_id, json.dumps(dict(info), indent=2), "environment.json")
    log_tags(client, run_id, {f"env.{key}": value for key, value in info.items()})


METHOD_SHEET_ARTIFACT = "method.json"


def log_method_sheet(client: MlflowClient, run_id: str, sheet: Mapping[str, object]) -> None:
    """The method as the run's implementation runs it (implementations/method_sheet.py), for the report."""
    client.log_dict(run_id, dict(sheet), METHOD_SHEET_ARTIFACT)


def configure_system_metrics() -> None:
    """MLflow's system metrics at a rate that does not flood the store (see the constants above);
    environment variables set by the user win."""
    import mlflow

    if "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" not in os.environ:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_SAMPLING_SECONDS)
    if "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING" not in os.environ:
        mlflow.set_system_metrics_samples_before_logging(SYSTEM_METRICS_SAMPLES_PER_LOG)

