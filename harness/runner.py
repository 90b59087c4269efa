"""`bench run`: the grid of runs (impl × labels × seed), each in its own worker process, tracked in
MLflow, resumable.

1. `plan_grid` checks every input before anything is written (each problem is one sentence and a
   non-zero exit), resolves the configuration and draws each (labels, seed) split once.
2. `execute_grid` saves the splits and skips finished runs; for each other run, when a slot is free, it
   claims the run (see "execute" below: a run another `bench run` is training is followed, not started
   twice), finds or creates its MLflow parent (labels, preset) and child (matched by `run_key`), writes a
   run spec into the run's work dir and runs `python -m harness.worker <spec>`, one at a time (one per GPU
   when several are present, or `--max-parallel`), with a progress bar per run. An unfinished child
   (killed, failed, interrupted) is resumed in the same MLflow run from the checkpoint in its work dir.
3. A summary table, and where to look.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import click

from harness import tracking
from harness.launch import (GpuChoiceError, GpuSlots, grid_gpus, visible_gpu_count, why_no_gpu, worker_command,
                            worker_environment)
from harness.presets import PRESETS, resolve_preset
from harness.worker import (EXIT_BUSY, LOG_FILE, PROGRESS_FILE, RUN_LOCK_FD_VARIABLE, SPEC_FILE, WORKER_FILE,
                            RunSpec, hold_run_lock, write_worker_file)
from implementations import implementation, implementation_names
from implementations.interface import ALGORITHMS, EVAL_TOP1, ImageData, ImplementationNotReady, TrainConfig, for_algorithm

SPLITS_FOLDER = "splits"
NOT_STARTED = "NOT STARTED"
SECONDS_TO_END_AFTER_STOP = 60  # a stopped worker gets this long to end its MLflow run before SIGKILL
LOG_TAIL_LINES = 20

@dataclass(frozen=True)
class GridOptions:
    """`bench run`'s options, as typed (lists still comma-separated text: `plan_grid` checks them)."""

    labels: str
    impl: str = "own"
    algorithm: str = "fixmatch"
    seeds: str = "0"
    preset: str = "paper"
    iterations: int | None = None
    eval_interval: int | None = None
    device: str = "auto"
    data_dir: Path = Path("data")
    download: bool = False
    experiment: str = tracking.DEFAULT_EXPERIMENT
    tracking_uri: str | None = None
    output_dir: Path = Path("runs")
    max_parallel: int | None = None
    gpus: str | None = None  # --gpus 2,3: which of the GPUs this process sees (cuda:2, cuda:3) the workers get
    # Speed knobs of the own implementation; None keeps the preset's value (see TrainConfig).
    precision: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    compile_augmentation: bool | None = None
    augmentation: str | None = None
    yes: bool = False  # start even when the grid would take more than a day here
    executor: str = "local"  # local: worker processes here; slurm: one Slurm job per run (harness/slurm.py)
    slurm: object = None  # harness.slurm.SlurmOptions, for --executor slurm
    allow_sqlite: bool = False  # --executor slurm on a sqlite store all the same


@dataclass(frozen=True)
class PlannedRun:
    impl: str
    labels: int
    seed: int
    config: TrainConfig
    split: object  # harness.splits.LabelSplit
    run_key: str

    @property
    def name(self) -> str:
        return tracking.child_run_name(self.impl, self.labels, self.seed, self.config.algorithm)


@dataclass(frozen=True)
class GridPlan:
    options: GridOptions
    runs: tuple[PlannedRun, ...]
    data: ImageData
    store: tracking.TrackingStore
    output_dir: Path
    data_dir: Path
    max_parallel: int
    gpu_ids: tuple[str, ...]  # as each worker's CUDA_VISIBLE_DEVICES names it; one run per GPU, round-robin beyond
    not_implemented: str = ""  # the (implementation, algorithm) pairs of the grid left out, in words


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


# --- 1. plan: every check before any work ---------------------------------------------------------------


def _split_list(text: str, option: str, noun: str, example: str) -> list[str]:
    items = [item.strip() for item in (text or "").split(",")]
    if not any(items):
        raise click.UsageError(f"{option} needs at least one {noun}, e.g. {option} {example}.")
    if "" in items:
        raise click.UsageError(f"{option} has an empty entry in '{text}'; separate {noun}s with single commas.")
    return items


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    values = []
    for item in _split_list(text, option, "value", "0,1,2"):
        try:
            values.append(int(item))
        except ValueError:
            raise click.UsageError(f"{option} takes whole numbers separated by commas; '{item}' is not one.") from None
    _reject_duplicates(values, option)
    return tuple(values)


def parse_name_list(text: str, option: str) -> tuple[str, ...]:
    items = _split_list(text, option, "name", "own,torchssl")
    _reject_duplicates(items, option)
    return tuple(items)


def _reject_duplicates(values: list, option: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise click.UsageError(f"{option} lists {value} more than once.")
        seen.add(value)


def plan_grid(options: GridOptions) -> GridPlan:
    """Check everything and draw the splits; writes nothing."""
    impls = parse_name_list(options.impl, "--impl")
    for impl in impls:
        if impl not in implementation_names():
            raise click.UsageError(f"Unknown implementation '{impl}' in --impl; choose from "
                                   f"{', '.join(implementation_names())}.")
    algorithms = parse_name_list(options.algorithm, "--algorithm")
    for algorithm in algorithms:
        if algorithm not in ALGORITHMS:
            raise click.UsageError(f"Unknown algorithm '{algorithm}' in --algorithm; choose from {', '.join(ALGORITHMS)}.")
    label_counts = parse_int_list(options.labels, "--labels")
    seeds = parse_int_list(options.seeds, "--seeds")
    for seed in seeds:
        if not 0 <= seed < 2**32:
            raise click.UsageError(f"--seeds {seed} is out of range; a seed is a whole number from 0 to 4294967295.")
    if options.preset not in PRESETS:
        raise click.UsageError(f"Unknown preset '{options.preset}'; choose from {', '.join(PRESETS)}.")
    for option, value in (("--iterations", options.iterations), ("--eval-interval", options.eval_interval),
                          ("--max-parallel", options.max_parallel)):
        if value is not None and value < 1:
            raise click.UsageError(f"{option} must be at least 1, got {value}.")
    for labels in label_counts:
        if labels <= 0:
            raise click.UsageError(f"--labels {labels} is not a positive number of labels.")

    gpu_ids = _grid_gpus(options)
    max_parallel = options.max_parallel or max(1, len(gpu_ids))
    _refuse_the_paper_preset_on_an_unasked_cpu(options, gpu_ids)

    _check_output_dir(Path(options.output_dir))
    store = tracking.resolve_store(options.output_dir, options.tracking_uri)
    if options.executor == "slurm" and not store.is_server and not options.allow_sqlite:
        raise click.UsageError(
            f"--executor slurm needs an MLflow server, not the sqlite store {store.tracking_uri}: jobs on many nodes "
            "writing one sqlite file (often on a network file system) lock it or corrupt it. Start one on a machine "
            "the nodes reach, e.g. `mlflow server --backend-store-uri sqlite:///$HOME/mlflow.db --artifacts-destination "
            "$HOME/mlflow-artifacts --host 0.0.0.0 --port 5000`, and pass --tracking-uri http://<that host>:5000 "
            "(or --allow-sqlite to use the file all the same).")
    try:
        tracking.check_reachable(store)
    except tracking.TrackingError as error:
        raise click.ClickException(str(error)) from None

    from harness.data import DataError, load_cifar10

    try:
        data = load_cifar10(options.data_dir, download=options.download)
    except DataError as error:
        raise click.ClickException(_sentence(error)) from None
    splits = _draw_splits(data, Path(options.data_dir), label_counts, seeds)

    runs = []
    missing = {(impl, algorithm) for impl in impls for algorithm in algorithms
               if algorithm not in implementation(impl).algorithms()}
    if len(missing) == len(impls) * len(algorithms):
        raise click.UsageError(f"--impl {options.impl} has none of --algorithm {options.algorithm}; "
                               + _missing_text(missing))
    for labels in label_counts:
        for seed in seeds:
            preset_config = resolve_preset(options.preset, iterations=options.iterations,
                                           eval_interval=options.eval_interval, device=options.device, seed=seed,
                                           precision=options.precision, channels_last=options.channels_last,
                                           compile=options.compile, augmentation=options.augmentation,
                                           compile_augmentation=options.compile_augmentation)
            split = splits[labels, seed]  # the same for every algorithm and implementation
            for algorithm in algorithms:
                config = for_algorithm(preset_config, algorithm)
                for impl in (impl for impl in impls if (impl, algorithm) not in missing):
                    impl_config = implementation(impl).configure(config)
                    reason = implementation(impl).refusal(impl_config, labels, data.num_classes)
                    if reason:
                        raise click.UsageError(reason)
                    runs.append(PlannedRun(impl, labels, seed, impl_config, split,
                                           run_key(impl, labels, seed, impl_config, split.digest)))
    for impl in impls:
        try:
            implementation(impl).check_ready()
        except ImplementationNotReady as error:
            raise click.ClickException(str(error)) from None
    if options.executor == "local":  # a Slurm job's device is not this machine's
        _confirm_duration(options, runs, max_parallel, gpu_ids)
    return GridPlan(options=options, runs=tuple(runs), data=data, store=store, not_implemented=_missing_text(missing),
                    output_dir=Path(options.output_dir).resolve(), data_dir=Path(options.data_dir).resolve(),
                    max_parallel=max_parallel, gpu_ids=gpu_ids)


def _missing_text(missing: set[tuple[str, str]]) -> str:
    """"own has no remixmatch, vat (…)." for the (implementation, algorithm) pairs not implemented."""
    by_impl: dict[str, list[str]] = {}
    for impl, algorithm in sorted(missing):
        by_impl.setdefault(impl, []).append(algorithm)
    return "; ".join(f"{impl} has no {', '.join(algorithms)}" for impl, algorithms in by_impl.items()) + (
        " (bench run --help lists which implementation has which)." if missing else "")


LONG_RUN_SECONDS = 24 * 3600  # a grid with a run estimated to take longer here is confirmed before it starts
ESTIMATED_ITERATIONS = 100_000  # only grids of runs at least this long are timed first (a few seconds)


def _confirm_duration(options: GridOptions, runs: list[PlannedRun], max_parallel: int, gpu_ids: tuple[str, ...]
                      ) -> None:
    """A grid with a run that would train for more than a day on this device (the paper preset on a CPU: months;
    on a GPU: days) says so, with the estimate and the preset that fits, and starts only when confirmed (or --yes)."""
    if options.yes or not runs or max(run.config.iterations for run in runs) < ESTIMATED_ITERATIONS:
        return
    from harness.estimate import timed_step_seconds

    first = runs[0]
    gpu = gpu_ids[0] if gpu_ids else None
    device = f"GPU {gpu}" if gpu is not None else "this CPU"
    click.echo(f"Timing one training step on {device} to estimate the grid's duration…", err=True)
    step = timed_step_seconds(first.impl, first.config, options.data_dir, first.split.labeled_indices, gpu)
    longest = max(run.config.iterations for run in runs)
    if longest * step <= LONG_RUN_SECONDS:
        return
    total = sum(run.config.iterations for run in runs) * step / max_parallel
    cpu_config = resolve_preset("cpu", seed=first.seed, device=options.device)
    cpu_step = timed_step_seconds(first.impl, cpu_config, options.data_dir, first.split.labeled_indices, gpu)
    message = (f"A run of this grid would train for about {_long_duration(longest * step)} on {device} "
               f"({longest:,} iterations at {step:.2f} s each, measured here), the {len(runs)} run(s) about "
               f"{_long_duration(total)} ({max_parallel} at a time); `--preset cpu` trains a run in about "
               f"{cpu_config.iterations * cpu_step / 60:.0f} minutes here.")
    if sys.stdin.isatty() and sys.stderr.isatty():
        click.echo(message, err=True)
        if click.confirm("Start it anyway?", default=False, err=True):
            return
        raise click.Abort()
    raise click.UsageError(f"{message} Pass --yes to start it anyway.")


def _long_duration(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:,.0f} days" if days >= 2 else f"{seconds / 3600:.0f} hours"


def _sentence(error: Exception) -> str:
    text = str(error).strip()
    return text[0].upper() + text[1:] if text else type(error).__name__


def _grid_gpus(options: GridOptions) -> tuple[str, ...]:
    """The GPUs the workers get (launch.grid_gpus). With `--device auto` and none here, one line says so and why,
    before anything starts: a grid must never train on the CPU without a word."""
    if options.device not in ("auto", "cpu", "cuda"):
        raise click.UsageError(f"Unknown --device '{options.device}'; choose from auto, cpu, cuda.")
    chosen = parse_int_list(options.gpus, "--gpus") if options.gpus is not None else None
    if chosen is not None and (options.device == "cpu" or options.executor != "local"):
        raise click.UsageError("--gpus chooses among this machine's GPUs for local runs; it goes with "
                               "--device auto or cuda and the local executor.")
    if options.device == "cpu" or options.executor != "local":  # a Slurm job's device is its node's, not this one's
        return ()
    count = visible_gpu_count()
    if count == 0:
        reason = why_no_gpu()
        if options.device == "cuda" or chosen is not None:
            asked = "--device cuda" if options.device == "cuda" else f"--gpus {options.gpus}"
            raise click.UsageError(f"{asked} was asked for, but {reason}; use --device cpu.")
        click.echo(f"No GPU: {reason}; the runs train on the CPU.", err=True)
        return ()
    try:
        return grid_gpus(count, os.environ, chosen)
    except GpuChoiceError as error:
        raise click.UsageError(str(error)) from None


def _refuse_the_paper_preset_on_an_unasked_cpu(options: GridOptions, gpu_ids: tuple[str, ...]) -> None:
    """The paper preset on a CPU trains for months: refused, --yes or not, unless the user asked for the CPU."""
    if options.preset == "paper" and not gpu_ids and options.device == "auto" and options.executor == "local":
        raise click.UsageError(
            "The paper preset on this machine's CPU would train each run for months (no GPU here, see the line "
            "above); pass --device cpu to train on the CPU all the same, or choose --preset cpu.")


def _check_output_dir(output_dir: Path) -> None:
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise click.UsageError(f"--output-dir {output_dir} cannot be created: {existing} is a file.")
    if not os.access(existing, os.W_OK):
        raise click.UsageError(f"--output-dir {output_dir} is not writable.")


def _draw_splits(data: ImageData, data_dir: Path, label_counts, seeds) -> dict:
    from harness.splits import SplitError, draw_split

    import numpy as np

    class_counts = np.bincount(data.train_labels, minlength=data.num_classes)
    scarcest = int(class_counts.argmin())
    for labels in label_counts:
        if labels % data.num_classes:
            raise click.UsageError(f"--labels {labels} is not divisible by the {data.num_classes} classes "
                                   "(the labeled set is class-balanced).")
        per_class = labels // data.num_classes
        if per_class > class_counts[scarcest]:
            raise click.UsageError(
                f"--labels {labels} needs {per_class} labeled images per class, but the data at {data_dir} "
                f"has only {class_counts[scarcest]} of class '{data.class_names[scarcest]}'.")
    splits = {}
    for labels in label_counts:
        for seed in seeds:
            try:
                splits[labels, seed] = draw_split(data.train_labels, labels, seed, data.num_classes, data.identity)
            except SplitError as error:
                raise click.UsageError(_sentence(error)) from None
    return splits


# Fields that say how a run executes, not what it computes: a run is the same run on another device, and with its
# augmentation compiled (the same pixels from the same draws).
NOT_IDENTITY = frozenset({"device", "compile_augmentation"})


def run_key(impl: str, labels: int, seed: int, config: TrainConfig, split_digest: str) -> str:
    """impl-labels-seed-preset-<hash>: the hash covers every field the implementation reads (not NOT_IDENTITY's,
    which say how a run executes, not what it computes) and the split, so a changed setting or different
    data makes a new run, the same command finds its run again, and a field an implementation never reads
    (e.g. own's augmentation for TorchSSL) makes no new run of it."""
    used = implementation(impl).fields_read(config.algorithm)
    identity = {key: value for key, value in config.as_params().items() if key in used and key not in NOT_IDENTITY}
    identity["split_digest"] = split_digest
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    # FixMatch runs keep the key they had before other algorithms existed, so that older stores resume.
    algorithm = "" if config.algorithm == "fixmatch" else f"{config.algorithm}-"
    return f"{algorithm}{impl}-{labels}-{seed}-{config.preset}-{digest}"


# --- 2. execute -----------------------------------------------------------------------------------------
#
# Several `bench run` may work on one store and output dir at once (overlapping grids, a second terminal, the
# same command after the first runner died). Two locks keep them apart:
# - the store lock (<output_dir>/store.lock, tracking.store_lock), held for the moments a runner creates the
#   embedded store or finds or creates the experiment, a parent or a child run, so that each exists once;
# - the run lock (<output_dir>/<experiment>/<run key>/worker.lock), held by the worker process of that run
#   for its whole life (the runner takes it and hands the open file to the worker it starts). A runner that
#   finds it held attaches to that worker: shows its progress (from progress.json in its work dir) and waits
#   for it to end.
# A run's work dir is <run key>/<MLflow run id>: a checkpoint belongs to the one MLflow run it was made for,
# so another store's run (same output dir, other --tracking-uri) never adopts it.



@dataclass
class _Active:
    """A run this runner watches: a worker it started (`process`), or one it attached to."""

    planned: PlannedRun
    run_id: str
    work_dir: Path
    process: subprocess.Popen | None = None
    worker_pid: int | None = None  # of an attached worker, when known
    adopted: bool = False  # an attached worker whose runner is gone: this runner stops it on Ctrl-C
    gpu_id: str | None = None  # as its CUDA_VISIBLE_DEVICES names it
    started: float = 0.0
    log_offset: int = 0
    bar: object = None
    last_iteration: int = 0
    last_top1: float | None = None
    last_checkpoint: int | None = None
    worker_seconds: float | None = None  # the worker's own time, from its "finished" event

    @property
    def name(self) -> str:
        return self.planned.name


def split_path(output_dir: Path, split) -> Path:
    return output_dir / SPLITS_FOLDER / f"labels{split.num_labels}-seed{split.seed}-{split.digest[:12]}"


def run_folder(output_dir: Path, experiment: str, key: str) -> Path:
    """Everything of one run key: its lock, and a work dir per MLflow run."""
    return output_dir / tracking.safe_folder_name(experiment) / key


def work_dir(output_dir: Path, experiment: str, key: str, run_id: str) -> Path:
    return run_folder(output_dir, experiment, key) / run_id


@dataclass(frozen=True)
class GridResult:
    outcomes: list[RunOutcome]
    interrupted: bool  # Ctrl-C or SIGTERM stopped the grid
    submitted: bool = False  # --executor slurm: the runs were handed to Slurm, not run here


def _read_worker_file(folder: Path) -> dict:
    try:
        return json.loads((folder / WORKER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _save_splits(plan: GridPlan) -> None:
    from harness.splits import LabelSplit, SplitError

    for split in {run.split.digest: run.split for run in plan.runs}.values():
        path = split_path(plan.output_dir, split)
        try:
            if LabelSplit.load(path).digest == split.digest:
                continue
        except SplitError:  # missing, torn or changed: the plan's split is the truth, written again
            pass
        split.save(path)


def execute_grid(plan: GridPlan) -> GridResult:
    options = plan.options
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    _save_splits(plan)
    try:
        with tracking.store_lock(plan.output_dir):
            client = plan.store.client()  # MLflow creates (and migrates) an embedded store when a client opens it
            experiment_id = tracking.get_or_create_experiment(client, options.experiment, plan.store.artifact_root)
    except tracking.TrackingError as error:
        raise click.ClickException(str(error)) from None

    outcomes: dict[str, RunOutcome] = {}
    resumed = 0
    for planned in plan.runs:
        existing = tracking.find_child_run(client, experiment_id, planned.run_key)
        if existing is not None and existing.info.status == "FINISHED":
            outcomes[planned.run_key] = _outcome_from_store(client, planned.name, existing.info.run_id)
            outcomes[planned.run_key].previously_finished = True
        resumed += existing is not None and existing.info.status != "FINISHED"
    pending = [planned for planned in plan.runs if planned.run_key not in outcomes]
    if options.executor == "slurm":
        return _submit_to_slurm(plan, client, experiment_id, pending, outcomes)
    _print_grid_header(plan, pending, outcomes, resumed)
    scheduler = _Scheduler(plan, client, experiment_id, pending, outcomes)
    try:
        scheduler.run()
    finally:
        for parent_run_id in scheduler.touched_parents:
            try:
                _end_parent(client, experiment_id, parent_run_id)
            except Exception as error:  # an unreachable store: the next `bench run` ends it
                click.echo(f"The parent run {parent_run_id} could not be ended ({_sentence(error)}).", err=True)
    for planned in plan.runs:  # the grid was stopped before these started
        outcomes.setdefault(planned.run_key, RunOutcome(planned.name, "", NOT_STARTED))
    outcomes_in_order = [outcomes[run.run_key] for run in plan.runs]
    _print_summary(plan, outcomes_in_order, experiment_id)
    return GridResult(outcomes_in_order, interrupted=scheduler.stopping)


def _submit_to_slurm(plan: GridPlan, client, experiment_id: str, pending: list[PlannedRun],
                     outcomes: dict[str, RunOutcome]) -> GridResult:
    """Submit every pending run as a job (one job array) and return: a run whose job is still queued or
    running, or whose worker runs here, is left as it is."""
    from harness import slurm

    options: slurm.SlurmOptions = plan.options.slurm
    to_submit = []
    touched_parents: set = set()
    with tracking.store_lock(plan.output_dir):
        for planned in pending:
            folder = run_folder(plan.output_dir, plan.options.experiment, planned.run_key)
            record = slurm.JobRecord.load(folder)
            state = record.state() if record is not None else None
            if state in slurm.LIVE_STATES:
                outcomes[planned.run_key] = RunOutcome(planned.name, record.run_id, f"{state} (job {record.job_id})")
                continue
            run_lock = hold_run_lock(folder)
            if run_lock is None:
                outcomes[planned.run_key] = RunOutcome(planned.name, "", "RUNNING (a worker of `bench run` here)")
                continue
            run_lock.close()
            existing = tracking.find_child_run(client, experiment_id, planned.run_key)
            spec = _prepare_run(plan, client, experiment_id, planned, existing, folder, touched_parents, click.echo)
            to_submit.append((planned, folder, spec))
        if to_submit:
            jobs_folder = plan.output_dir / "slurm" / "%j"
            jobs = slurm.submit(options, jobs_folder, [Path(spec.work_dir) / SPEC_FILE for _, _, spec in to_submit],
                                job_name=plan.options.experiment)
            for (planned, folder, spec), job in zip(to_submit, jobs):
                slurm.JobRecord(str(job.job_id), options.cluster, str(jobs_folder), spec.run_id).save(folder)
                client.update_run(spec.run_id, status="SCHEDULED")
                outcomes[planned.run_key] = RunOutcome(planned.name, spec.run_id, f"SUBMITTED (job {job.job_id})")
    outcomes_in_order = [outcomes[run.run_key] for run in plan.runs]
    rows = [("run", "state", "MLflow run id")] + [(outcome.name, "FINISHED (earlier)" if outcome.previously_finished
                                                   else outcome.status, outcome.run_id) for outcome in outcomes_in_order]
    _print_rows(rows)
    click.echo(f"\n{len(to_submit)} job(s) submitted. Watch them: `bench status --output-dir {plan.output_dir}`; "
               f"stop them: `bench cancel --output-dir {plan.output_dir}`. The same command again submits only what is "
               "neither queued, running nor finished.")
    return GridResult(outcomes_in_order, interrupted=False, submitted=True)


def _outcome_from_store(client, name: str, run_id: str) -> RunOutcome:
    run = client.get_run(run_id)
    metrics = run.data.metrics
    best = metrics.get("summary/best_top1")
    if best is None and EVAL_TOP1 in metrics:
        best = max(point.value for point in client.get_metric_history(run_id, EVAL_TOP1))
    wall = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time and run.info.start_time else None
    return RunOutcome(name, run_id, run.info.status, final_top1=metrics.get(EVAL_TOP1), best_top1=best,
                      wall_seconds=wall, message=run.data.tags.get(tracking.ERROR_TAG, ""))


def _end_parent(client, experiment_id: str, parent_run_id: str) -> None:
    """A parent is FINISHED when all its children are; else FAILED if one failed, else KILLED; it stays
    RUNNING while a worker (of any `bench run`) runs one of its children."""
    children = tracking.search_runs_by_tags(client, experiment_id, {"mlflow.parentRunId": parent_run_id})
    statuses = {child.info.status for child in children}
    if "RUNNING" in statuses:
        return
    status = "FINISHED" if statuses <= {"FINISHED"} else "FAILED" if "FAILED" in statuses else "KILLED"
    client.set_terminated(parent_run_id, status)


def _prepare_run(plan: GridPlan, client, experiment_id: str, planned: PlannedRun, existing, folder: Path,
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


class _Scheduler:
    """Claims runs (at most max_parallel at once), starts or attaches to their workers, renders their
    progress, records how they end.

    Every worker runs in its own session, so a Ctrl-C in the terminal reaches only the runner, which
    then stops the workers it started (and adopted orphans) with SIGTERM (each ends its MLflow run KILLED)
    and waits for them; workers of another live `bench run` are left alone.
    """

    POLL_SECONDS = 0.5

    def __init__(self, plan: GridPlan, client, experiment_id: str, pending: list[PlannedRun],
                 outcomes: dict[str, RunOutcome]):
        self.plan = plan
        self.client = client
        self.experiment_id = experiment_id
        self.pending = deque(pending)
        self.active: dict[str, _Active] = {}  # by run key
        self.outcomes = outcomes
        self.events: queue.Queue = queue.Queue()
        self.gpu_slots = GpuSlots(plan.gpu_ids)
        self.progress = _Progress(total=len(pending))
        self.stopping = False
        self.touched_parents: set[str] = set()
        self.relaunches: dict[str, int] = {}

    def run(self) -> None:
        # Ctrl-C and SIGTERM both stop the grid cleanly (SIGINT explicitly too: a shell starts background
        # jobs with it ignored, and then Python would never raise KeyboardInterrupt).
        previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
        previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self._loop()
        except KeyboardInterrupt:
            self._stop_all()
        except BaseException:  # a bug here must not leave workers running unattended
            self._stop_all()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)
            signal.signal(signal.SIGINT, previous_sigint)
            self.progress.close()

    def _loop(self) -> None:
        while self.pending or self.active:
            while self.pending and len(self.active) < self.plan.max_parallel and not self.stopping:
                self._claim(self.pending.popleft())
            self._loop_once(self.POLL_SECONDS)

    def _loop_once(self, timeout: float) -> None:
        try:
            kind, key, payload = self.events.get(timeout=timeout)
        except queue.Empty:
            self._poll_attached()
            return
        active = self.active.get(key)
        if active is not None:
            self._on_event(active, payload) if kind == "event" else self._on_exit(active, payload)

    # -- claiming: finished, attach or launch -------------------------------------------------------------

    def _claim(self, planned: PlannedRun) -> None:
        plan = self.plan
        folder = run_folder(plan.output_dir, plan.options.experiment, planned.run_key)
        with tracking.store_lock(plan.output_dir):
            run_lock = hold_run_lock(folder)
            if run_lock is None:
                self._attach(planned, folder)
                return
            try:
                existing = tracking.find_child_run(self.client, self.experiment_id, planned.run_key)
                if existing is not None and existing.info.status == "FINISHED":  # finished meanwhile, elsewhere
                    self.outcomes[planned.run_key] = _outcome_from_store(self.client, planned.name, existing.info.run_id)
                    self.outcomes[planned.run_key].previously_finished = True
                    self.progress.run_skipped()
                    run_lock.close()
                    return
                spec = _prepare_run(plan, self.client, self.experiment_id, planned, existing, folder,
                                    self.touched_parents, self.progress.write)
                write_worker_file(folder, {"run_id": spec.run_id, "work_dir": spec.work_dir, "runner_pid": os.getpid()})
            except BaseException:
                run_lock.close()
                raise
        self._launch(planned, spec, run_lock)

    def _attach(self, planned: PlannedRun, folder: Path) -> None:
        """Another worker holds the run lock: follow it until it ends."""
        holder = _read_worker_file(folder)
        active = _Active(planned, holder.get("run_id", ""), Path(holder.get("work_dir", folder)),
                         worker_pid=holder.get("worker_pid"), started=time.monotonic())
        active.adopted = not _process_alive(holder.get("runner_pid"))
        self.active[planned.run_key] = active
        whose = "whose `bench run` is gone" if active.adopted else "of another `bench run`"
        active.bar = self.progress.run_started(planned.name, planned.config.iterations,
                                               note=f"attached to its running worker ({whose})")
        self._show_attached_progress(active)

    def _launch(self, planned: PlannedRun, spec: RunSpec, run_lock) -> None:
        folder = Path(spec.work_dir)
        active = _Active(planned, spec.run_id, folder)
        log_path = folder / LOG_FILE
        with open(log_path, "ab") as log:
            active.log_offset = log.tell()
            active.gpu_id = self.gpu_slots.take()
            # CPU runs side by side share the cores instead of each taking all of them.
            threads = max(1, (os.cpu_count() or 1) // self.plan.max_parallel) \
                if active.gpu_id is None and self.plan.max_parallel > 1 else None
            environment = worker_environment(os.environ, gpu=active.gpu_id, threads=threads)
            environment[RUN_LOCK_FD_VARIABLE] = str(run_lock.fileno())
            try:
                # The worker inherits the open lock file: the run stays locked exactly as long as it lives.
                active.process = subprocess.Popen(
                    worker_command(folder / SPEC_FILE),
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=environment,
                    start_new_session=True, text=True, bufsize=1, pass_fds=(run_lock.fileno(),),
                )
            finally:
                run_lock.close()
        active.started = time.monotonic()
        self.active[planned.run_key] = active
        active.bar = self.progress.run_started(planned.name, planned.config.iterations)
        threading.Thread(target=self._read_events, args=(planned.run_key, active.process), daemon=True).start()

    # -- following workers ----------------------------------------------------------------------------------

    def _read_events(self, key: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.put(("event", key, event))
        self.events.put(("exit", key, process.wait()))

    def _on_event(self, active: _Active, event: dict) -> None:
        if event.get("event") == "progress":
            active.last_iteration = int(event.get("iteration", 0))
            active.last_checkpoint = event.get("checkpoint")
            self.progress.run_progress(active.bar, active.name, active.last_iteration, event.get("top1"),
                                       bool(event.get("evaluated")))
        elif event.get("event") == "finished" and event.get("wall_seconds") is not None:
            active.worker_seconds = float(event["wall_seconds"])

    def _show_attached_progress(self, active: _Active) -> None:
        try:
            event = json.loads((active.work_dir / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return
        if int(event.get("iteration", 0)) != active.last_iteration:
            # Polled, this file may skip the evaluation's own event: a new top-1 is an evaluation.
            event["evaluated"] = event.get("evaluated") or event.get("top1") != active.last_top1
            active.last_top1 = event.get("top1")
            self._on_event(active, event)

    def _poll_attached(self) -> None:
        for key, active in list(self.active.items()):
            if active.process is not None:
                continue
            self._show_attached_progress(active)
            if _worker_holds(run_folder(self.plan.output_dir, self.plan.options.experiment, key)):
                continue
            del self.active[key]  # the worker is gone
            self._record_end(active, self._ended_outcome(active, None))

    def _on_exit(self, active: _Active, return_code: int) -> None:
        key = active.planned.run_key
        del self.active[key]
        _kill_process_group(active.process.pid)  # anything the worker left behind (e.g. TorchSSL's process)
        self.gpu_slots.give_back(active.gpu_id)
        if return_code == EXIT_BUSY:  # another `bench run` started it in the moment between: follow that one
            self.progress.run_ended(active.bar, None, "")
            self.pending.appendleft(active.planned)
            return
        self._record_end(active, self._ended_outcome(active, return_code))

    def _ended_outcome(self, active: _Active, return_code: int | None) -> RunOutcome:
        try:
            return self._outcome_recorded(active, return_code)
        except Exception as error:  # the store cannot be reached: what the worker logged waits in its journal
            return RunOutcome(active.name, active.run_id, "UNRECORDED", log_path=active.work_dir / LOG_FILE,
                              message=f"the MLflow store could not be read ({_sentence(error)}); run the same "
                                      "command again once it is reachable: the run's numbers wait in its work dir")

    def _outcome_recorded(self, active: _Active, return_code: int | None) -> RunOutcome:
        outcome = _outcome_from_store(self.client, active.name, active.run_id) if active.run_id else \
            RunOutcome(active.name, "", "KILLED", message="its worker ended without saying which run it was")
        if outcome.status in ("RUNNING", "SCHEDULED") and active.run_id:  # the worker died without ending its run
            if return_code is not None and return_code < 0:
                status, message = "KILLED", f"the worker was killed by {signal.Signals(-return_code).name}"
            elif return_code is not None:
                status, message = "FAILED", f"the worker exited with code {return_code} before ending its run"
            else:
                status, message = "KILLED", "the worker it was attached to ended without ending its run"
            message += f" at iteration {active.last_iteration}; " + (
                f"its checkpoint of iteration {active.last_checkpoint} is kept for the next `bench run`"
                if active.last_checkpoint else "it had no checkpoint yet: the next `bench run` starts it afresh")
            tracking.end_run_with_error(self.client, active.run_id, status, message)
            outcome = _outcome_from_store(self.client, active.name, active.run_id)
        if active.process is not None:
            outcome.wall_seconds = active.worker_seconds or time.monotonic() - active.started
            outcome.log_path = active.work_dir / LOG_FILE
        return outcome

    def _record_end(self, active: _Active, outcome: RunOutcome) -> None:
        key = active.planned.run_key
        attached = active.process is None
        # An attached worker that stopped unfinished (killed by its user, or by a closed terminal's runner) is
        # resumed by this runner, once; its own runner may be gone.
        if attached and outcome.status != "FINISHED" and not self.stopping and self.relaunches.get(key, 0) < 1:
            self.relaunches[key] = self.relaunches.get(key, 0) + 1
            self.progress.run_ended(active.bar, None, "")
            self.progress.write(f"{active.name}: the worker this runner followed ended {outcome.status}; resuming it.")
            self.pending.appendleft(active.planned)
            return
        self.outcomes[key] = outcome
        tail = "" if outcome.status == "FINISHED" or outcome.log_path is None else _log_tail(outcome.log_path, active.log_offset)
        self.progress.run_ended(active.bar, outcome, tail)

    def _stop_all(self) -> None:
        """Ctrl-C or SIGTERM: start nothing more; stop the workers this runner started or adopted; wait until
        each has ended its run."""
        self.stopping = True
        self.pending.clear()
        others = [active for active in self.active.values() if active.process is None and not active.adopted]
        for active in others:
            del self.active[active.planned.run_key]
            self.progress.run_ended(active.bar, None, "")
        if others:
            self.progress.write(f"Leaving {len(others)} run(s) to the `bench run` that started them: "
                                + ", ".join(active.name for active in others) + ".")
        self.progress.write("Stopping: each running worker ends its MLflow run as KILLED and keeps its last checkpoint "
                            "(which one, each run's line below says; Ctrl-C again to kill them at once)...")
        for active in self.active.values():
            pid = active.process.pid if active.process is not None else active.worker_pid
            if pid:
                _signal_process_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + SECONDS_TO_END_AFTER_STOP
        while self.active:
            try:
                self._loop_once(min(0.5, max(0.1, deadline - time.monotonic())))
            except KeyboardInterrupt:
                deadline = 0
            if time.monotonic() > deadline:
                for active in self.active.values():
                    pid = active.process.pid if active.process is not None else active.worker_pid
                    if pid:
                        _signal_process_group(pid, signal.SIGKILL)
                deadline = float("inf")


def _signal_process_group(pid: int, signal_number: int) -> None:
    try:
        os.killpg(pid, signal_number)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_process_group(pid: int) -> None:
    _signal_process_group(pid, signal.SIGKILL)


def _log_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


class _Progress:
    """A tqdm bar per running run (iteration, it/s, ETA, latest top-1) under a grid line; plain lines
    (one per evaluation and per run end) when stderr is not a terminal."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.interactive = sys.stderr.isatty()
        self.total = total
        self.counts = {"FINISHED": 0, "FAILED": 0, "KILLED": 0}
        self.running = 0
        self.grid_bar = tqdm(total=total, position=0, leave=False, unit="run", dynamic_ncols=True,
                             bar_format="grid {n}/{total} runs ended |{bar:20}| {desc}",
                             disable=not self.interactive or total == 0)
        self.slots: list[object | None] = []
        self._update_grid()

    def _update_grid(self) -> None:
        self.grid_bar.set_description_str(f"{self.counts['FINISHED']} finished · {self.counts['FAILED']} failed · "
                                      f"{self.counts['KILLED']} killed · {self.running} running · "
                                      f"{self.total - self.grid_bar.n - self.running} waiting", refresh=True)

    def write(self, text: str) -> None:
        self.tqdm.write(text, file=sys.stderr)

    def run_started(self, name: str, total_iterations: int, note: str = "started"):
        self.running += 1
        self._update_grid()
        if not self.interactive:
            self.write(f"{name}: {note}")
            return None
        slot = next((index for index, taken in enumerate(self.slots) if taken is None), len(self.slots))
        if slot == len(self.slots):
            self.slots.append(None)
        bar = self.tqdm(total=total_iterations, desc=name, position=slot + 1, leave=False, unit="it",
                        dynamic_ncols=True, postfix="starting" if note == "started" else note)
        bar.slot = slot
        bar.started = False
        self.slots[slot] = bar
        return bar

    def run_progress(self, bar, name: str, iteration: int, top1: float | None, evaluated: bool) -> None:
        top1_text = "top-1 –" if top1 is None else f"top-1 {100 * top1:.2f}%"
        if bar is None:
            if evaluated:
                self.write(f"{name}: iteration {iteration}, {top1_text}")
            return
        if not bar.started:  # a resumed run starts counting where its checkpoint left off
            bar.started = True
            bar.reset(total=bar.total)
            bar.initial = bar.n = iteration
            bar.last_print_n = iteration
        else:
            bar.update(iteration - bar.n)
        bar.set_postfix_str(top1_text)

    def run_skipped(self) -> None:
        """A waiting run turned out finished (by another `bench run`)."""
        self.counts["FINISHED"] += 1
        self.grid_bar.update(1)
        self._update_grid()

    def run_ended(self, bar, outcome: RunOutcome | None, log_tail: str) -> None:
        """`outcome` None: the run goes back to waiting (its worker is followed, or resumed, next)."""
        self.running -= 1
        if bar is not None:
            self.slots[bar.slot] = None
            bar.close()
        if outcome is None:
            self._update_grid()
            return
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        self.grid_bar.update(1)
        self._update_grid()
        top1 = "" if outcome.final_top1 is None else f", top-1 {100 * outcome.final_top1:.2f}%"
        line = f"{outcome.name}: {outcome.status}{top1} in {_duration(outcome.wall_seconds)}"
        if outcome.message:
            line += f": {outcome.message}"
        self.write(line)
        if log_tail:
            self.write(f"  last lines of {outcome.log_path}:\n" + "\n".join("  | " + row for row in log_tail.splitlines()))

    def close(self) -> None:
        for bar in self.slots:
            if bar is not None:
                bar.close()
        self.grid_bar.close()


# --- 3. report ------------------------------------------------------------------------------------------


def _print_grid_header(plan: GridPlan, pending: list[PlannedRun], outcomes: dict[str, RunOutcome], resumed: int) -> None:
    done = sum(outcome.previously_finished for outcome in outcomes.values())
    options = plan.options
    data_note = "" if plan.data.official else " (not the official full set)"
    click.echo(f"Grid: {len(plan.runs)} runs ({' × '.join([options.algorithm, options.impl, 'labels ' + options.labels, 'seeds ' + options.seeds])}), "
               f"preset {options.preset}, data {plan.data.source_dir or plan.data_dir}{data_note}.")
    click.echo(f"MLflow: {plan.store.tracking_uri}, experiment '{options.experiment}'.")
    if plan.not_implemented:
        click.echo(f"Left out: {plan.not_implemented}")
    if done:
        click.echo(f"{done} of {len(plan.runs)} runs already finished; skipping them.")
    if pending:
        click.echo(f"Running {len(pending)} run(s)" + (f", {resumed} resumed from an earlier attempt" if resumed else "")
                   + f", {plan.max_parallel} at a time{_gpu_words(plan)} (a run another `bench run` is training is "
                   "followed, not started twice).")


def _gpu_words(plan: GridPlan) -> str:
    """Where the workers run: ' on GPU 4, 5 (one each)', or round-robin when more run at a time than GPUs."""
    if not plan.gpu_ids:
        return " on the CPU"
    gpus = ", ".join(plan.gpu_ids)
    if plan.max_parallel <= len(plan.gpu_ids):
        return f" on GPU {gpus} (one run per GPU)"
    return f" on GPU {gpus}: more runs at a time than GPUs, so they share them round-robin"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    """A plain table: the header, a rule, the rows."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    click.echo("")
    for index, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))


def _print_summary(plan: GridPlan, outcomes: list[RunOutcome], experiment_id: str) -> None:
    rows = [("run", "status", "final top-1", "best top-1", "wall time", "MLflow run id")]
    for outcome in outcomes:
        status = "FINISHED (earlier)" if outcome.previously_finished else outcome.status
        rows.append((outcome.name, status, _percent(outcome.final_top1), _percent(outcome.best_top1),
                     _duration(outcome.wall_seconds), outcome.run_id))
    _print_rows(rows)
    done = sum(outcome.previously_finished for outcome in outcomes)
    if done:
        click.echo(f"\n{done} run(s) already finished (no training).")
    for outcome in outcomes:
        if outcome.status not in ("FINISHED", NOT_STARTED) and outcome.log_path is not None:
            click.echo(f"{outcome.name} {outcome.status}: {outcome.message or 'see its log'} (log: {outcome.log_path})")
    if any(outcome.status in ("FAILED", "KILLED", NOT_STARTED, "UNRECORDED") for outcome in outcomes):
        click.echo("Run the same command again to resume unfinished runs from their last checkpoint.")
    if plan.store.is_server:
        where = f"{plan.store.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}"
    else:
        default_output = Path("runs").resolve() == plan.output_dir
        ui = "bench ui" + ("" if default_output or not plan.store.embedded else f" --output-dir {plan.options.output_dir}")
        if not plan.store.embedded:
            ui += f" --tracking-uri {plan.store.tracking_uri}"
        where = f"`{ui}`"
    click.echo(f"Look at the runs: {where} (experiment '{plan.options.experiment}', id {experiment_id}); "
               f"splits and checkpoints are under {plan.output_dir}.")


def run_grid(options: GridOptions) -> int:
    """`bench run`: 0 when every run of the grid is finished, 1 when one failed or was killed, 130 when
    the grid was stopped (Ctrl-C, SIGTERM)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "Creating initial MLflow database tables..."
    plan = plan_grid(options)
    result = execute_grid(plan)
    if result.interrupted:
        return 130
    if result.submitted:
        return 0
    return 0 if all(outcome.status == "FINISHED" for outcome in result.outcomes) else 1


# --- bench status / bench cancel: runs submitted to Slurm ---------------------------------------------------


def _submitted_runs(output_dir: Path, experiment: str, tracking_uri: str | None):
    """(run folder, job record, MLflow run or None) of every run of the experiment submitted as a job."""
    from harness import slurm

    folder = Path(output_dir) / tracking.safe_folder_name(experiment)
    records = [(path.parent, slurm.JobRecord.load(path.parent)) for path in sorted(folder.glob(f"*/{slurm.JOB_FILE}"))]
    if not records:
        raise click.ClickException(f"No run of experiment '{experiment}' under {output_dir} was submitted to Slurm; "
                                   "submit with `bench run --executor slurm …`.")
    client = tracking.resolve_store(output_dir, tracking_uri).client()
    runs = []
    for run_folder_path, record in records:
        try:
            run = client.get_run(record.run_id) if record else None
        except Exception:  # deleted or unreachable: the job's state still shows
            run = None
        runs.append((run_folder_path, record, run))
    return runs


def show_status(output_dir: Path, experiment: str, tracking_uri: str | None) -> int:
    """`bench status`: each submitted run's state in Slurm and in MLflow, and its last iteration. A parent run whose
    children have all ended is ended too (no runner stays to do it for jobs)."""
    from harness import slurm

    client = tracking.resolve_store(output_dir, tracking_uri).client()
    submitted = []
    for folder, record, run in _submitted_runs(output_dir, experiment, tracking_uri):
        state = record.state() if record is not None else "?"
        if run is not None and run.info.status in ("RUNNING", "SCHEDULED") and state not in slurm.LIVE_STATES \
                and not _worker_holds(folder):  # the job is over and no worker holds the run: it was killed
            tracking.end_run_with_error(
                client, run.info.run_id, "KILLED",
                f"its Slurm job {record.job_id} ended ({state}) without ending the run; the same `bench run "
                "--executor slurm` submits it again, and it resumes from its last checkpoint")
            run = client.get_run(run.info.run_id)
        submitted.append((folder, record, run, state))
    for parent in {run.data.tags.get("mlflow.parentRunId") for _, _, run, _ in submitted if run is not None} - {None}:
        _end_parent(client, client.get_run(parent).info.experiment_id, parent)
    rows = [("run", "Slurm job", "job state", "MLflow", "iteration", "top-1")]
    for folder, record, run, state in submitted:
        progress = {}
        if record is not None:
            try:
                progress = json.loads((folder / record.run_id / PROGRESS_FILE).read_text())
            except (OSError, ValueError):
                pass
        top1 = run.data.metrics.get(EVAL_TOP1) if run is not None else None
        rows.append((run.info.run_name if run is not None else folder.name, record.job_id if record else "?",
                     state, run.info.status if run is not None else "not in MLflow",
                     f"{progress.get('iteration', 0)}/{progress.get('total', '?')}", _percent(top1)))
    _print_rows(rows)
    return 0


def _worker_holds(run_folder_path: Path) -> bool:
    probe = hold_run_lock(run_folder_path)
    if probe is None:
        return True
    probe.close()
    return False


def cancel_jobs(output_dir: Path, experiment: str, tracking_uri: str | None) -> int:
    """`bench cancel`: cancel every queued or running job of the experiment's submitted runs; each run keeps its
    checkpoint, and `bench run --executor slurm` with the same options submits it again."""
    from harness import slurm

    cancelled = 0
    for folder, record, run in _submitted_runs(output_dir, experiment, tracking_uri):
        if record is not None and record.state() in slurm.LIVE_STATES:
            record.cancel()
            cancelled += 1
            click.echo(f"cancelled job {record.job_id} ({run.info.run_name if run is not None else folder.name})")
    click.echo(f"{cancelled} job(s) cancelled.")
    return 0
