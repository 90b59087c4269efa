"""`bench run`'s plan: every input checked before anything is written (each problem is one sentence and a
non-zero exit), the configuration of every run resolved, each (labels, seed) split drawn once, the GPUs chosen,
and, for a grid of long runs, its duration estimated and confirmed. `plan_grid` writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from harness import tracking
from harness.launch import GpuChoiceError, grid_gpus, visible_gpu_count, why_no_gpu
from harness.presets import PRESETS, resolve_preset
from implementations import implementation, implementation_names
from implementations.common import sentence
from implementations.interface import (ALGORITHMS, DEFAULT_EXPERIMENT, NOT_IDENTITY, ImageData, ImplementationNotReady,
                                       TrainConfig, for_algorithm)

if TYPE_CHECKING:  # slurm.py imports this module; splits.py loads when splits are drawn
    from harness.slurm import SlurmOptions
    from harness.splits import LabelSplit


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
    experiment: str = DEFAULT_EXPERIMENT
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
    slurm: SlurmOptions | None = None  # for --executor slurm
    allow_sqlite: bool = False  # --executor slurm on a sqlite store all the same


@dataclass(frozen=True)
class PlannedRun:
    impl: str
    labels: int
    seed: int
    config: TrainConfig
    split: LabelSplit
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
    impls, algorithms, label_counts, seeds = _grid_lists(options)
    gpu_ids = _grid_gpus(options)
    max_parallel = options.max_parallel or max(1, len(gpu_ids))
    _refuse_the_paper_preset_on_an_unasked_cpu(options, gpu_ids)
    store = _reachable_store(options)
    from harness.data import DataError, load_cifar10

    try:
        data = load_cifar10(options.data_dir, download=options.download)
    except DataError as error:
        raise click.ClickException(sentence(error)) from None
    splits = _draw_splits(data, Path(options.data_dir), label_counts, seeds)
    missing = {(impl, algorithm) for impl in impls for algorithm in algorithms
               if algorithm not in implementation(impl).algorithms()}
    if len(missing) == len(impls) * len(algorithms):
        raise click.UsageError(f"--impl {options.impl} has none of --algorithm {options.algorithm}; "
                               + _missing_text(missing))
    runs = _planned_runs(options, splits, impls, algorithms, missing, data.num_classes)
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


def _grid_lists(options: GridOptions) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """The grid's implementations, algorithms, label counts and seeds, each checked; the numeric options too."""
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
    return impls, algorithms, label_counts, seeds


def _reachable_store(options: GridOptions) -> tracking.TrackingStore:
    _check_output_dir(Path(options.output_dir))
    store = tracking.resolve_store(options.output_dir, options.tracking_uri)
    if options.executor == "slurm" and not store.is_server and not options.allow_sqlite:
        raise click.UsageError(
            f"--executor slurm needs an MLflow server, not the sqlite store {store.tracking_uri}: jobs on many nodes "
            "writing one sqlite file (often on a network file system) lock it or corrupt it. Start one on a machine "
            "the nodes reach, e.g. `mlflow server --backend-store-uri sqlite:///$HOME/mlflow.db --artifacts-destination "
            "$HOME/mlflow-artifacts --host 0.0.0.0 --port 5000`, and pass --tracking-uri http://<that host>:5000 "
            "(or --allow-sqlite to use the file all the same).")
    tracking.check_reachable(store)
    return store


def _planned_runs(options: GridOptions, splits: dict, impls, algorithms, missing: set, num_classes: int
                  ) -> list[PlannedRun]:
    """Every (labels, seed, algorithm, implementation) run, each configured by its implementation, on its split."""
    runs = []
    for labels, seed in splits:
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
                reason = implementation(impl).refusal(impl_config, labels, num_classes)
                if reason:
                    raise click.UsageError(reason)
                runs.append(PlannedRun(impl, labels, seed, impl_config, split,
                                       run_key(impl, labels, seed, impl_config, split.digest)))
    return runs


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
                raise click.UsageError(sentence(error)) from None
    return splits


def run_key(impl: str, labels: int, seed: int, config: TrainConfig, split_digest: str) -> str:
    """impl-labels-seed-preset-<hash>: the hash covers every field the implementation reads (not those declared
    identity=False on TrainConfig, which say how a run executes, not what it computes) and the split, so a changed setting or different
    data makes a new run, the same command finds its run again, and a field an implementation never reads
    (e.g. own's augmentation for TorchSSL) makes no new run of it."""
    used = implementation(impl).fields_read(config.algorithm)
    identity = {key: value for key, value in config.as_params().items() if key in used and key not in NOT_IDENTITY}
    identity["split_digest"] = split_digest
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    # FixMatch runs keep the key they had before other algorithms existed, so that older stores resume.
    algorithm = "" if config.algorithm == "fixmatch" else f"{config.algorithm}-"
    return f"{algorithm}{impl}-{labels}-{seed}-{config.preset}-{digest}"

