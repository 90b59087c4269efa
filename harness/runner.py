"""`bench run`: the grid of runs (impl × labels × seed), each in its own worker process, tracked in
MLflow, resumable.

1. `plan_grid` checks every input before anything is written (each problem is one sentence and a
   non-zero exit), resolves the configuration and draws each (labels, seed) split once.
2. `execute_grid` saves the splits, finds or creates the MLflow parent run of every (labels, preset)
   and the child run of every (impl, labels, seed) (matched by `run_key`), skips finished children,
   writes a run spec per run into its work dir and runs `python -m harness.worker <spec>` for each,
   one at a time (one per GPU when several are present, or `--max-parallel`), with a progress bar
   per run. An unfinished child (killed, failed, interrupted) is resumed in the same MLflow run from
   the checkpoint in its work dir.
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
from dataclasses import dataclass, field
from pathlib import Path

import click

from harness import tracking
from harness.presets import PRESETS, resolve_preset
from harness.worker import EXIT_BUSY, LOG_FILE, SPEC_FILE, RunSpec, hold_run_lock
from implementations import IMPLEMENTATIONS
from implementations.interface import EVAL_TOP1, ImageData, TrainConfig

SPLITS_FOLDER = "splits"
SECONDS_TO_END_AFTER_STOP = 60  # a stopped worker gets this long to end its MLflow run before SIGKILL
LOG_TAIL_LINES = 20

# glibc serves every allocation above 32 MiB with its own mmap and unmaps it on free, so a CPU training
# step faults all its activations in again (measured: 2.2 M page faults and 4-10 s of kernel time per
# paper-shape step). With those two settings freed blocks stay in malloc's heap and the next step reuses
# them, as the CUDA caching allocator does on a GPU; the price is that a process keeps its peak memory.
KEEP_FREED_MEMORY_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"


@dataclass(frozen=True)
class GridOptions:
    """`bench run`'s options, as typed (lists still comma-separated text: `plan_grid` checks them)."""

    labels: str
    impl: str = "own"
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
    # Speed knobs of the own implementation; None keeps the preset's value (see TrainConfig).
    precision: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    augmentation: str | None = None


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
        return tracking.child_run_name(self.impl, self.labels, self.seed)


@dataclass(frozen=True)
class GridPlan:
    options: GridOptions
    runs: tuple[PlannedRun, ...]
    data: ImageData
    store: tracking.TrackingStore
    output_dir: Path
    data_dir: Path
    max_parallel: int
    gpu_ids: tuple[int, ...]  # one run per GPU when several are present


@dataclass
class RunOutcome:
    name: str
    run_id: str
    status: str  # FINISHED, FAILED, KILLED, or SCHEDULED when never started
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
        if impl not in IMPLEMENTATIONS:
            raise click.UsageError(f"Unknown implementation '{impl}' in --impl; choose from {', '.join(IMPLEMENTATIONS)}.")
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

    gpu_ids = _visible_gpus(options.device)
    max_parallel = options.max_parallel or max(1, len(gpu_ids))

    store = tracking.resolve_store(options.output_dir, options.tracking_uri)
    try:
        tracking.check_reachable(store)
    except tracking.TrackingError as error:
        raise click.ClickException(str(error)) from None
    _check_output_dir(Path(options.output_dir))

    from harness.data import DataError, load_cifar10

    try:
        data = load_cifar10(options.data_dir, download=options.download)
    except DataError as error:
        raise click.ClickException(_sentence(error)) from None
    splits = _draw_splits(data, Path(options.data_dir), label_counts, seeds)

    runs = []
    for labels in label_counts:
        for seed in seeds:
            config = resolve_preset(options.preset, iterations=options.iterations,
                                    eval_interval=options.eval_interval, device=options.device, seed=seed,
                                    precision=options.precision, channels_last=options.channels_last,
                                    compile=options.compile, augmentation=options.augmentation)
            split = splits[labels, seed]
            if "torchssl" in impls:
                from implementations.torchssl.adapter import unsupported_reason

                reason = unsupported_reason(config, labels, data.num_classes)
                if reason:
                    raise click.UsageError(reason)
            for impl in impls:
                runs.append(PlannedRun(impl, labels, seed, config, split, run_key(impl, labels, seed, config, split.digest)))
    if "torchssl" in impls:
        _check_torchssl_checkout()
    return GridPlan(options=options, runs=tuple(runs), data=data, store=store,
                    output_dir=Path(options.output_dir).resolve(), data_dir=Path(options.data_dir).resolve(),
                    max_parallel=max_parallel, gpu_ids=gpu_ids)


def _sentence(error: Exception) -> str:
    text = str(error).strip()
    return text[0].upper() + text[1:] if text else type(error).__name__


def _visible_gpus(device: str) -> tuple[int, ...]:
    if device not in ("auto", "cpu", "cuda"):
        raise click.UsageError(f"Unknown --device '{device}'; choose from auto, cpu, cuda.")
    if device == "cpu":
        return ()
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and count == 0:
        raise click.UsageError("--device cuda was asked for, but PyTorch sees no CUDA device here; use --device cpu.")
    return tuple(range(count))


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


def _check_torchssl_checkout() -> None:
    from harness.vendor import VendorError, verify_checkout

    try:
        verify_checkout()
    except VendorError as error:
        message = _sentence(error)
        if "bench vendor sync" not in message:
            message = f"{message.rstrip('.')}; `bench vendor sync` fetches the pinned TorchSSL checkout."
        raise click.ClickException(message) from None


def run_key(impl: str, labels: int, seed: int, config: TrainConfig, split_digest: str) -> str:
    """impl-labels-seed-preset-<hash>: the hash covers every hyper-parameter (not the device, which
    says where a run executes, not what it computes) and the split, so a changed setting or different
    data makes a new run, and the same command finds its run again."""
    identity = {key: value for key, value in config.as_params().items() if key != "device"}
    identity["split_digest"] = split_digest
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"{impl}-{labels}-{seed}-{config.preset}-{digest}"


# --- 2. execute -----------------------------------------------------------------------------------------


@dataclass
class _Launch:
    """A run about to start or running: its spec, and the worker process once started."""

    spec: RunSpec
    planned: PlannedRun
    process: subprocess.Popen | None = None
    gpu_id: int | None = None
    started: float = 0.0
    log_offset: int = 0
    finished_event: dict = field(default_factory=dict)
    bar: object = None
    last_iteration: int = 0


def split_path(output_dir: Path, split) -> Path:
    return output_dir / SPLITS_FOLDER / f"labels{split.num_labels}-seed{split.seed}-{split.digest[:12]}"


def work_dir(output_dir: Path, experiment: str, key: str) -> Path:
    return output_dir / tracking.safe_folder_name(experiment) / key


@dataclass(frozen=True)
class GridResult:
    outcomes: list[RunOutcome]
    interrupted: bool  # Ctrl-C or SIGTERM stopped the grid


def with_kept_freed_memory(environment: dict[str, str]) -> dict[str, str]:
    """A run process's environment with glibc's malloc keeping freed memory (see above). Given to every
    run, own and TorchSSL alike; ignored where the C library is not glibc. A user's own malloc tunables win."""
    tunables = environment.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." not in tunables:
        environment = {**environment, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, KEEP_FREED_MEMORY_TUNABLES]))}
    return environment


def execute_grid(plan: GridPlan) -> GridResult:
    from harness.splits import LabelSplit, SplitError

    options = plan.options
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    for split in {run.split.digest: run.split for run in plan.runs}.values():
        path = split_path(plan.output_dir, split)
        try:
            if LabelSplit.load(path).digest == split.digest:
                continue
        except SplitError:
            pass
        split.save(path)

    client = plan.store.client()
    try:
        experiment_id = tracking.get_or_create_experiment(client, options.experiment, plan.store.artifact_root)
    except tracking.TrackingError as error:
        raise click.ClickException(str(error)) from None
    parents = {labels: tracking.find_or_create_parent_run(client, experiment_id, labels, options.preset)
               for labels in dict.fromkeys(run.labels for run in plan.runs)}

    outcomes: dict[str, RunOutcome] = {}
    launches: list[_Launch] = []
    for planned in plan.runs:
        existing = tracking.find_child_run(client, experiment_id, planned.run_key)
        if existing is not None and existing.info.status == "FINISHED":
            outcomes[planned.run_key] = _outcome_from_store(client, planned.name, existing.info.run_id)
            outcomes[planned.run_key].previously_finished = True
            continue
        if existing is not None:
            run_id = existing.info.run_id
        else:
            run_id = tracking.create_child_run(client, experiment_id, parents[planned.labels], planned.name, {
                "impl": planned.impl, "labels": planned.labels, "seed": planned.seed,
                "split_digest": planned.split.digest, "preset": planned.config.preset, "run_key": planned.run_key,
            })
        folder = work_dir(plan.output_dir, options.experiment, planned.run_key)
        lock = hold_run_lock(folder)
        if lock is None:
            outcomes[planned.run_key] = RunOutcome(planned.name, run_id, "RUNNING",
                                                   message="another `bench run` is running it now; left alone")
            continue
        lock.close()
        spec = RunSpec(
            impl=planned.impl, labels=planned.labels, seed=planned.seed, preset=planned.config.preset,
            run_key=planned.run_key, run_name=planned.name, config=planned.config.as_params(),
            data_dir=str(plan.data_dir), split_path=str(split_path(plan.output_dir, planned.split)),
            split_digest=planned.split.digest, tracking_uri=plan.store.tracking_uri,
            experiment_id=experiment_id, run_id=run_id, work_dir=str(folder),
        )
        spec.save(folder / SPEC_FILE)
        outcomes[planned.run_key] = RunOutcome(planned.name, run_id, "SCHEDULED", log_path=folder / LOG_FILE)
        launches.append(_Launch(spec=spec, planned=planned))

    _print_grid_header(plan, launches, outcomes)
    touched_parents = {parents[launch.planned.labels] for launch in launches}
    for parent_run_id in touched_parents:
        client.update_run(parent_run_id, status="RUNNING")
    scheduler = _Scheduler(plan, client, launches, outcomes)
    try:
        scheduler.run()
    finally:
        for parent_run_id in touched_parents:
            _end_parent(client, experiment_id, parent_run_id)
    outcomes_in_order = [outcomes[run.run_key] for run in plan.runs]
    _print_summary(plan, outcomes_in_order, experiment_id)
    return GridResult(outcomes_in_order, interrupted=scheduler.stopping)


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
    RUNNING while another `bench run` runs one of its children."""
    children = tracking.search_runs_by_tags(client, experiment_id, {"mlflow.parentRunId": parent_run_id})
    statuses = {child.info.status for child in children}
    if "RUNNING" in statuses:
        return
    status = "FINISHED" if statuses <= {"FINISHED"} else "FAILED" if "FAILED" in statuses else "KILLED"
    client.set_terminated(parent_run_id, status)


class _Scheduler:
    """Starts workers (at most max_parallel at once), renders their progress, records how they end.

    Every worker runs in its own session, so a Ctrl-C in the terminal reaches only the runner, which
    then stops the workers with SIGTERM (each ends its MLflow run KILLED) and waits for them.
    """

    def __init__(self, plan: GridPlan, client, launches: list[_Launch], outcomes: dict[str, RunOutcome]):
        self.plan = plan
        self.client = client
        self.pending = deque(launches)
        self.active: dict[int, _Launch] = {}  # by pid
        self.outcomes = outcomes
        self.events: queue.Queue = queue.Queue()
        self.free_gpus = deque(plan.gpu_ids)
        self.progress = _Progress(total=len(launches))
        self.stopping = False

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
                self._start(self.pending.popleft())
            try:
                kind, pid, payload = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            launch = self.active.get(pid)
            if launch is None:
                continue
            if kind == "event":
                self._on_event(launch, payload)
            else:
                self._on_exit(launch, payload)

    def _start(self, launch: _Launch) -> None:
        folder = Path(launch.spec.work_dir)
        log_path = folder / LOG_FILE
        log = open(log_path, "ab")
        launch.log_offset = log.tell()
        environment = with_kept_freed_memory(dict(os.environ))
        project_root = str(Path(__file__).resolve().parents[1])
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, environment.get("PYTHONPATH")]))
        if self.free_gpus:
            launch.gpu_id = self.free_gpus.popleft()
            environment["CUDA_VISIBLE_DEVICES"] = str(launch.gpu_id)
        elif self.plan.max_parallel > 1 and "OMP_NUM_THREADS" not in environment:
            # CPU runs side by side share the cores instead of each taking all of them.
            environment["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.plan.max_parallel))
        launch.process = subprocess.Popen(
            [sys.executable, "-m", "harness.worker", str(folder / SPEC_FILE)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=environment,
            start_new_session=True, text=True, bufsize=1,
        )
        log.close()
        launch.started = time.monotonic()
        self.active[launch.process.pid] = launch
        launch.bar = self.progress.run_started(launch.spec.run_name, launch.planned.config.iterations)
        threading.Thread(target=self._read_events, args=(launch.process,), daemon=True).start()

    def _read_events(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.put(("event", process.pid, event))
        self.events.put(("exit", process.pid, process.wait()))

    def _on_event(self, launch: _Launch, event: dict) -> None:
        if event.get("event") == "progress":
            launch.last_iteration = int(event.get("iteration", 0))
            self.progress.run_progress(launch.bar, launch.spec.run_name, launch.last_iteration, event.get("top1"),
                                       bool(event.get("evaluated")))
        elif event.get("event") == "finished":
            launch.finished_event = event

    def _on_exit(self, launch: _Launch, return_code: int) -> None:
        del self.active[launch.process.pid]
        _kill_process_group(launch.process.pid)  # anything the worker left behind (e.g. TorchSSL's process)
        if launch.gpu_id is not None:
            self.free_gpus.append(launch.gpu_id)
        run_id = launch.spec.run_id
        outcome = _outcome_from_store(self.client, launch.spec.run_name, run_id)
        if return_code == EXIT_BUSY:  # another `bench run` started it meanwhile
            outcome.message = "another `bench run` is running it now; left alone"
        elif outcome.status in ("RUNNING", "SCHEDULED"):  # the worker died without ending its run
            if return_code < 0:
                status = "KILLED"
                message = f"the worker was killed by {signal.Signals(-return_code).name}"
            else:
                status, message = "FAILED", f"the worker exited with code {return_code} before ending its run"
            message += f" after iteration {launch.last_iteration}; its checkpoint is kept for the next `bench run`"
            tracking.end_run_with_error(self.client, run_id, status, message)
            outcome = _outcome_from_store(self.client, launch.spec.run_name, run_id)
        outcome.wall_seconds = time.monotonic() - launch.started
        outcome.log_path = Path(launch.spec.work_dir) / LOG_FILE
        self.outcomes[launch.spec.run_key] = outcome
        tail = "" if outcome.status == "FINISHED" else _log_tail(outcome.log_path, launch.log_offset)
        self.progress.run_ended(launch.bar, outcome, tail)

    def _stop_all(self) -> None:
        """Ctrl-C or SIGTERM: start nothing more; stop the workers; wait until each has ended its run."""
        self.stopping = True
        self.pending.clear()
        self.progress.write("Stopping: each running worker ends its MLflow run as KILLED and keeps its checkpoint "
                            "(Ctrl-C again to kill them at once)...")
        for pid in list(self.active):
            _signal_process_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + SECONDS_TO_END_AFTER_STOP
        while self.active:
            try:
                self._loop_once(timeout=max(0.1, deadline - time.monotonic()))
            except KeyboardInterrupt:
                deadline = 0
            if time.monotonic() > deadline:
                for pid in list(self.active):
                    _signal_process_group(pid, signal.SIGKILL)
                deadline = float("inf")

    def _loop_once(self, timeout: float) -> None:
        try:
            kind, pid, payload = self.events.get(timeout=min(timeout, 0.5))
        except queue.Empty:
            return
        launch = self.active.get(pid)
        if launch is not None:
            self._on_event(launch, payload) if kind == "event" else self._on_exit(launch, payload)


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

    def run_started(self, name: str, total_iterations: int):
        self.running += 1
        self._update_grid()
        if not self.interactive:
            self.write(f"{name}: started")
            return None
        slot = next((index for index, taken in enumerate(self.slots) if taken is None), len(self.slots))
        if slot == len(self.slots):
            self.slots.append(None)
        bar = self.tqdm(total=total_iterations, desc=name, position=slot + 1, leave=False, unit="it",
                        dynamic_ncols=True, postfix="starting")
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

    def run_ended(self, bar, outcome: RunOutcome, log_tail: str) -> None:
        self.running -= 1
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if bar is not None:
            self.slots[bar.slot] = None
            bar.close()
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


def _print_grid_header(plan: GridPlan, launches: list[_Launch], outcomes: dict[str, RunOutcome]) -> None:
    done = sum(outcome.previously_finished for outcome in outcomes.values())
    options = plan.options
    data_note = "" if plan.data.official else " (not the official full set)"
    click.echo(f"Grid: {len(plan.runs)} runs ({' × '.join([options.impl, 'labels ' + options.labels, 'seeds ' + options.seeds])}), "
               f"preset {options.preset}, data {plan.data.source_dir or plan.data_dir}{data_note}.")
    click.echo(f"MLflow: {plan.store.tracking_uri}, experiment '{options.experiment}'.")
    if done:
        click.echo(f"{done} of {len(plan.runs)} runs already finished; skipping them.")
    resumed = sum(1 for launch in launches if (Path(launch.spec.work_dir) / LOG_FILE).exists())
    if launches:
        click.echo(f"Running {len(launches)} run(s)" + (f", {resumed} resumed from an earlier attempt" if resumed else "")
                   + f", {plan.max_parallel} at a time.")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _print_summary(plan: GridPlan, outcomes: list[RunOutcome], experiment_id: str) -> None:
    rows = [("run", "status", "final top-1", "best top-1", "wall time", "MLflow run id")]
    for outcome in outcomes:
        status = "FINISHED (earlier)" if outcome.previously_finished else outcome.status
        rows.append((outcome.name, status, _percent(outcome.final_top1), _percent(outcome.best_top1),
                     _duration(outcome.wall_seconds), outcome.run_id))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    click.echo("")
    for index, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))
    done = sum(outcome.previously_finished for outcome in outcomes)
    if done:
        click.echo(f"\n{done} run(s) already finished (no training).")
    for outcome in outcomes:
        if outcome.status not in ("FINISHED", "SCHEDULED") and outcome.log_path is not None:
            click.echo(f"{outcome.name} {outcome.status}: {outcome.message or 'see its log'} (log: {outcome.log_path})")
    if any(outcome.status in ("FAILED", "KILLED", "SCHEDULED") for outcome in outcomes):
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
    return 0 if all(outcome.status == "FINISHED" for outcome in result.outcomes) else 1
