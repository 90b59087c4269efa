"""A grid's runs in MLflow: each run's parent (labels, preset, algorithm) and child (matched by its run key),
the spec a worker starts from, how a run ended, and when a parent is over."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import tracking
from harness.layout import split_path, work_dir
from harness.plan import GridPlan, PlannedRun
from harness.worker import SPEC_FILE, RunSpec
from implementations.interface import EVAL_TOP1, SUMMARY_BEST_TOP1


NOT_STARTED = "NOT STARTED"


@dataclass
class RunOutcome:
    name: str
    run_id: str
    status: str  # FINISHED, FAILED, KILLED, NOT_STARTED (the grid stopped first), or UNRECORDED (store unreachable)
    previously_finished: bool = False
    final_top1: float | None = None
    best_top1: float | None = None
    wall_seconds: float | None = None
    message: str = ""
    log_path: Path | None = None


def outcome_from_store(client, name: str, run_id: str) -> RunOutcome:
    run = client.get_run(run_id)
    metrics = run.data.metrics
    best = metrics.get(SUMMARY_BEST_TOP1)
    if best is None and EVAL_TOP1 in metrics:
        best = max(point.value for point in client.get_metric_history(run_id, EVAL_TOP1))
    wall = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time and run.info.start_time else None
    return RunOutcome(name, run_id, run.info.status, final_top1=metrics.get(EVAL_TOP1), best_top1=best,
                      wall_seconds=wall, message=run.data.tags.get(tracking.ERROR_TAG, ""))


def end_parent(client, experiment_id: str, parent_run_id: str) -> None:
    """A parent is FINISHED when all its children are; else FAILED if one failed, else KILLED; it stays
    RUNNING while a worker (of any `bench run`) runs one of its children."""
    children = tracking.search_runs_by_tags(client, experiment_id, {tracking.PARENT_RUN_ID_TAG: parent_run_id})
    statuses = {child.info.status for child in children}
    if "RUNNING" in statuses:
        return
    status = "FINISHED" if statuses <= {"FINISHED"} else "FAILED" if "FAILED" in statuses else "KILLED"
    client.set_terminated(parent_run_id, status)


def prepare_run(plan: GridPlan, client, experiment_id: str, planned: PlannedRun, existing, folder: Path,
                 touched_parents: set, say) -> RunSpec:
    """The run's MLflow run (under its parent) and its spec in its work dir: what a worker needs to start."""
    run_id = _child_run(client, experiment_id, planned, existing, folder, touched_parents, say)
    folder_of_run = work_dir(plan.output_dir, plan.options.experiment, planned.run_key, run_id)
    spec = RunSpec(
        impl=planned.impl, labels=planned.labels, seed=planned.seed, preset=planned.config.preset,
        run_key=planned.run_key, run_name=planned.name, config=planned.config.as_params(),
        data_dir=str(plan.data_dir), split_path=str(split_path(plan.output_dir, planned.split)),
        split_digest=planned.split.digest, tracking_uri=plan.store.tracking_uri,
        experiment_id=experiment_id, run_id=run_id, work_dir=str(folder_of_run),
    )
    folder_of_run.mkdir(parents=True, exist_ok=True)
    spec.save(folder_of_run / SPEC_FILE)
    return spec


def _child_run(client, experiment_id: str, planned: PlannedRun, existing, folder: Path, touched_parents: set,
               say) -> str:
    """The MLflow run to train in: the unfinished one of this run key, unless it has numbers its work dir
    can no longer continue (the folder was deleted, e.g. after a torn checkpoint): that one goes to MLflow's
    trash and the run starts afresh in a new one, so that no history is spliced from two attempts."""
    parent = tracking.find_or_create_parent_run(client, experiment_id, planned.labels, planned.config.preset,
                                                planned.config.algorithm)
    touched_parents.add(parent)
    client.update_run(parent, status="RUNNING")
    if existing is not None:
        run_id = existing.info.run_id
        if (folder / run_id).exists() or not existing.data.metrics:
            return run_id
        client.delete_run(run_id)
        say(f"{planned.name}: its work dir {folder / run_id} is gone, so MLflow run {run_id} cannot be continued; "
            f"it is moved to MLflow's trash (`mlflow runs restore --run-id {run_id}` brings it back) and the run "
            "starts afresh in a new MLflow run.")
    return tracking.create_child_run(client, experiment_id, parent, planned.name, {
        "impl": planned.impl, "algorithm": planned.config.algorithm, "labels": planned.labels, "seed": planned.seed,
        "split_digest": planned.split.digest, "preset": planned.config.preset, "run_key": planned.run_key,
    })


@dataclass(frozen=True)
class GridResult:
    outcomes: list[RunOutcome]
    interrupted: bool  # Ctrl-C or SIGTERM stopped the grid
    submitted: bool = False  # --executor slurm: the runs were handed to Slurm, not run here
