"""The experiment, its parent runs and their child runs; their names, tags and params."""

from __future__ import annotations

import json
from typing import Mapping

from mlflow.entities import Param, Run, RunTag, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

from harness.tracking.store import TrackingError, chunks

PARENT_RUN_ID_TAG = MLFLOW_PARENT_RUN_ID  # a child run's parent, as the MLflow UI nests them

ROLE_TAG = "ssl_bench.role"
ERROR_TAG = "ssl_bench.error"  # why a run ended FAILED or KILLED; removed when it finishes
PARENT, CHILD = "parent", "child"


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
    for chunk in chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def log_params_once(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    """Params not yet in the run. A resumed run keeps the values it started with: the run key covers
    every hyper-parameter except how it executes (interface.NOT_IDENTITY: the device, a compiled augmentation), so a
    resume may differ only there, which is then recorded as the tag `resumed_with.<param>`."""
    logged = client.get_run(run_id).data.params
    log_params(client, run_id, {key: value for key, value in params.items() if key not in logged})
    log_tags(client, run_id, {f"resumed_with.{key}": _param_text(value) for key, value in params.items()
                              if key in logged and logged[key] != _param_text(value)})


def log_tags(client: MlflowClient, run_id: str, tags: Mapping[str, object]) -> None:
    entries = [RunTag(key, str(value)) for key, value in tags.items()]
    for chunk in chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk)


def _param_text(value: object) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
