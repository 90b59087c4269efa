"""`bench run`: the grid of runs (algorithm × impl × labels × seed), each in its own worker process, tracked in
MLflow, resumable. The story of a grid, each step in its own room:

1. plan (plan.py): every input checked before anything is written, the configuration resolved, the splits drawn;
2. open the store and its experiment, save the splits (layout.py), skip the runs already finished (grid_runs.py);
3. run the others locally (scheduler.py: one worker process per run, a progress bar each, console.py) or hand them
   to Slurm (slurm.py);
4. a summary table, and where to look (console.py).
"""

from __future__ import annotations

import logging

import click

from harness import tracking
from harness.console import print_grid_header, print_summary
from harness.grid_runs import NOT_STARTED, GridResult, RunOutcome, end_parent, outcome_from_store
from harness.layout import save_splits
from harness.plan import GridOptions, GridPlan, plan_grid
from implementations.common import first_line, is_disk_full
from harness.scheduler import Scheduler


def execute_grid(plan: GridPlan) -> GridResult:
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    save_splits(plan)
    client, experiment_id = _open_experiment(plan)
    outcomes, resumed = _finished_earlier(plan, client, experiment_id)
    pending = [planned for planned in plan.runs if planned.run_key not in outcomes]
    if plan.options.executor == "slurm":
        from harness import slurm

        return slurm.submit_grid(plan, client, experiment_id, pending, outcomes)
    print_grid_header(plan, pending, outcomes, resumed)
    stopped = _run_locally(plan, client, experiment_id, pending, outcomes)
    for planned in plan.runs:  # the grid was stopped before these started
        outcomes.setdefault(planned.run_key, RunOutcome(planned.name, "", NOT_STARTED))
    outcomes_in_order = [outcomes[run.run_key] for run in plan.runs]
    print_summary(plan, outcomes_in_order, experiment_id)
    return GridResult(outcomes_in_order, interrupted=stopped)


def _open_experiment(plan: GridPlan):
    with tracking.store_lock(plan.output_dir):
        tracking.create_embedded_store(plan.store)
        client = plan.store.client()
        return client, tracking.get_or_create_experiment(client, plan.options.experiment, plan.store.artifact_root)


def _finished_earlier(plan: GridPlan, client, experiment_id: str) -> tuple[dict[str, RunOutcome], int]:
    """The outcomes of the runs already finished, and how many others an earlier attempt left unfinished."""
    outcomes: dict[str, RunOutcome] = {}
    resumed = 0
    for planned in plan.runs:
        existing = tracking.find_child_run(client, experiment_id, planned.run_key)
        if existing is not None and existing.info.status == "FINISHED":
            outcomes[planned.run_key] = outcome_from_store(client, planned.name, existing.info.run_id)
            outcomes[planned.run_key].previously_finished = True
        resumed += existing is not None and existing.info.status != "FINISHED"
    return outcomes, resumed


def _run_locally(plan: GridPlan, client, experiment_id: str, pending, outcomes: dict[str, RunOutcome]) -> bool:
    """Every pending run in a worker process here; its parents ended after. True when the grid was stopped."""
    scheduler = Scheduler(plan, client, experiment_id, pending, outcomes)
    try:
        scheduler.run()
    finally:
        for parent_run_id in scheduler.touched_parents:
            try:
                end_parent(client, experiment_id, parent_run_id)
            except Exception as error:  # an unreachable store: the next `bench run` ends it
                reason = "the disk holding the store is full" if is_disk_full(error) else first_line(error)
                click.echo(f"The parent run {parent_run_id} could not be ended ({reason}); the next `bench run` "
                           "of this grid ends it.", err=True)
    return scheduler.stopping


def run_grid(options: GridOptions) -> int:
    """`bench run`: 0 when every run of the grid is finished, 1 when one failed or was killed, 130 when
    the grid was stopped (Ctrl-C, SIGTERM)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "Creating initial MLflow database tables..."
    # It logs every SQLAlchemy error, with the statement and its parameters, before raising it: the runner
    # says what each error means in one sentence instead.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    plan = plan_grid(options)
    result = execute_grid(plan)
    if result.interrupted:
        return 130
    if result.submitted:
        return 0
    return 0 if all(outcome.status == "FINISHED" for outcome in result.outcomes) else 1

