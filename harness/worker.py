"""One run of the grid, in a process of its own: `python -m harness.worker <spec.json>`.

The runner (harness/grid_runs.py, for the local scheduler or a Slurm job) writes a `RunSpec` into the run's work dir and starts this entry
point; the same spec file could be shipped to a cluster node. The worker loads the data and the
split, starts the run's MLflow run (already created by the runner, found again on resume), records
code version, environment and split, trains through `implementation(impl).train`, and ends the
run FINISHED, FAILED (an exception, e.g. a non-finite loss; the message is recorded) or KILLED
(SIGINT/SIGTERM). The implementation checkpoints into the work dir and resumes from it.

Progress goes to the runner as JSON lines on the worker's original stdout (one object per line,
"event": started | progress | finished). Everything else the process prints, including the
implementation's own output, goes to stderr, which the runner sends to `worker.log`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Mapping

from harness.worker_events import FREE_SPACE, RunnerEvents, Stopped
from implementations import interface
from implementations.common import (SQLITE_FULL, error_chain, first_line, full_disk_file, is_disk_full,
                                    write_text_atomically)
from implementations.interface import CheckpointError, NonFiniteLossError, RunInputs, TrainConfig

SPEC_FILE = "spec.json"
LOG_FILE = "worker.log"

LOCK_FILE = "worker.lock"  # in the run key's folder: held by the one worker of that run key
WORKER_FILE = "worker.json"  # beside it: which MLflow run and work dir the holder works on, and its pid
RUN_LOCK_FD_VARIABLE = "SSL_BENCH_RUN_LOCK_FD"  # the lock file the runner took and handed over
JOURNAL_FILE = "metrics_journal.jsonl"  # logged numbers waiting for the checkpoint that covers them
PROGRESS_FILE = "progress.json"  # the latest progress event, for a `bench run` that attaches

EXIT_FINISHED, EXIT_FAILED, EXIT_KILLED, EXIT_BUSY = 0, 1, 3, 4


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run; JSON on disk."""

    impl: str
    labels: int
    seed: int
    preset: str
    run_key: str
    run_name: str
    config: dict  # TrainConfig.as_params()
    data_dir: str
    split_path: str  # LabelSplit.save() stem: <split_path>.npy + <split_path>.json
    split_digest: str
    tracking_uri: str
    experiment_id: str
    run_id: str
    work_dir: str

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.config)

    def save(self, path: Path | str) -> None:
        write_text_atomically(Path(path), json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> "RunSpec":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise SpecError(f"The run spec {path} cannot be read ({type(error).__name__}: {error}); run the same "
                            "`bench run` again, which writes it anew.") from None


class SpecError(ValueError):
    """The spec file is missing, torn or not a spec; the message is one sentence."""


def write_worker_file(run_key_folder: Path | str, facts: Mapping[str, object]) -> None:
    write_text_atomically(Path(run_key_folder) / WORKER_FILE, json.dumps(dict(facts)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.worker <spec.json>", file=sys.stderr)
        return 2
    events_stream = _claim_stdout_for_events()
    try:
        spec = RunSpec.load(argv[0])
    except SpecError as error:
        print(error, file=sys.stderr)
        return EXIT_FAILED
    return run_worker(spec, events_stream)


def _claim_stdout_for_events() -> IO[str]:
    """Keep the original stdout for progress events; point fd 1 (and sys.stdout) at stderr, so that
    whatever else is printed, by us or by an implementation, cannot corrupt the event stream."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def hold_run_lock(run_key_folder: Path | str):
    """An open file holding an exclusive lock on the run key's folder, or None when another process (the
    worker of another `bench run`) holds it. The lock goes with the process, however it ends."""
    import fcntl

    Path(run_key_folder).mkdir(parents=True, exist_ok=True)
    lock = open(Path(run_key_folder) / LOCK_FILE, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _run_lock(spec: RunSpec):
    """The lock the runner handed over (an inherited open file), or one taken here (a worker started by hand)."""
    handed_over = os.environ.pop(RUN_LOCK_FD_VARIABLE, None)
    if handed_over is not None:
        return os.fdopen(int(handed_over), "a")
    return hold_run_lock(Path(spec.work_dir).parent)


def run_worker(spec: RunSpec, events_stream: IO[str]) -> int:
    # Stops wait until the store is open: one in between would leave MLflow half-imported, the run not endable.
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    lock = _run_lock(spec)
    if lock is None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask_before)
        print(f"--- another process is running {spec.run_name} ({Path(spec.work_dir).parent}); leaving it alone",
              file=sys.stderr, flush=True)
        return EXIT_BUSY
    write_worker_file(Path(spec.work_dir).parent, {"run_id": spec.run_id, "work_dir": spec.work_dir,
                                                   "worker_pid": os.getpid(), "runner_pid": os.getppid()})
    started = time.monotonic()
    config = spec.train_config()
    events = RunnerEvents(events_stream, config.iterations, Path(spec.work_dir) / PROGRESS_FILE)
    _log(f"--- worker {os.getpid()} starting {spec.run_name} (run {spec.run_id}) at {_now()}")
    attempt, client = _Attempt(), None
    signal.signal(signal.SIGTERM, events.stop)
    signal.signal(signal.SIGINT, events.stop)
    try:
        client = _open_store(spec, mask_before)
        attempt.result = _train(spec, config, client, events, attempt)
        attempt.status = "FINISHED"
    except (Stopped, Exception) as error:
        attempt.status, attempt.message = _failure(error, events, spec)
        attempt.disk_full = is_disk_full(error)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _end_mlflow_run(client, spec, attempt)
        wall_seconds = time.monotonic() - started
        _log(f"--- worker ended {attempt.status} at {_now()} after {wall_seconds:.1f} s"
             f"{': ' + attempt.message if attempt.message else ''}")
    events.send("finished", **attempt.finished_event(wall_seconds))
    return {"FINISHED": EXIT_FINISHED, "FAILED": EXIT_FAILED}.get(attempt.status, EXIT_KILLED)


@dataclass
class _Attempt:
    """How this attempt at the run went: FINISHED, FAILED or KILLED, why, and what training returned."""

    status: str = "FAILED"
    message: str = ""
    disk_full: bool = False  # the message says so; the traceback stays in worker.log
    result: interface.RunResult | None = None  # when training returned
    run_started: bool = False  # the MLflow run was started in this process (mlflow.start_run)

    def finished_event(self, wall_seconds: float) -> dict:
        finished = {"status": self.status, "message": self.message, "wall_seconds": wall_seconds,
                    "disk_full": self.disk_full}
        if self.result is not None:
            finished.update(iterations=self.result.iterations, best_top1=self.result.best_top1,
                            final_top1=self.result.final_metrics.get(interface.EVAL_TOP1))
        return finished


STOPS = {signal.SIGINT, signal.SIGTERM}


def _open_store(spec: RunSpec, mask_before: set):
    """The tracking client, then the stops held back since the worker started let through: one that came
    meanwhile (the runner's Ctrl-C as the worker starts) is handled now, by a worker that can end its run."""
    try:
        return _tracking_client(spec)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask_before)


def _tracking_client(spec: RunSpec):
    import mlflow

    from harness import tracking

    # A tracking server that goes away mid-run must not hold training up for minutes at every checkpoint: give
    # up on a request soon (the numbers wait in the journal for the next checkpoint). A user's settings win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    mlflow.set_tracking_uri(spec.tracking_uri)
    return tracking.LockRetryingClient(spec.tracking_uri)


def _train(spec: RunSpec, config: TrainConfig, client, events: RunnerEvents, attempt: _Attempt):
    """Start (or resume) the run's MLflow run, record what its numbers depend on, train, record the result."""
    import mlflow

    from harness import tracking
    from implementations import implementation

    tracking.configure_system_metrics()
    run = client.get_run(spec.run_id)
    events.latest_top1 = run.data.metrics.get(interface.EVAL_TOP1)  # a resumed run's last evaluation
    tracking.clear_error(client, run)
    tracking.retry_while_locked(lambda: mlflow.start_run(run_id=spec.run_id, log_system_metrics=True))
    attempt.run_started = True
    events.send("started", run_id=spec.run_id, pid=os.getpid())

    inputs, split = _load_inputs(spec, config)
    _record_run_facts(client, spec, config, inputs, split)
    sink = tracking.MlflowMetricsSink(client, spec.run_id, inputs.data.class_names,
                                      Path(spec.work_dir) / JOURNAL_FILE, listener=events)
    result = implementation(spec.impl).train(inputs, sink)
    sink.flush()
    _record_result(client, spec, inputs, result)
    return result


def _failure(error: BaseException, events: RunnerEvents, spec: RunSpec) -> tuple[str, str]:
    """The status and message of an attempt that raised; called inside its `except`."""
    from harness import tracking

    if isinstance(error, Stopped):
        return "KILLED", events.stopped_message(error)
    if is_disk_full(error):
        _log(traceback.format_exc().rstrip())  # the details stay in worker.log, if it can still be written
        return "FAILED", events.ended_message(f"the disk holding {_full_disk_folder(error, spec)} is full") + FREE_SPACE
    if isinstance(error, NonFiniteLossError):
        return "FAILED", f"non-finite loss: {error}"
    if isinstance(error, (CheckpointError, tracking.TrackingError)):  # the message says what happened and what to do
        return "FAILED", str(error)
    _log(traceback.format_exc().rstrip())
    return "FAILED", f"{type(error).__name__}: {error}"


def _full_disk_folder(error: BaseException, spec: RunSpec) -> Path:
    from harness import tracking

    named = full_disk_file(error)
    if named is not None:
        return Path(named).parent
    store = tracking.sqlite_path(spec.tracking_uri)
    if store is not None and any(SQLITE_FULL in str(link) for link in error_chain(error)):
        return store.parent
    return Path(spec.work_dir)


def _end_mlflow_run(client, spec: RunSpec, attempt: _Attempt) -> None:
    """End the run as the attempt went; `client` is None when a stop came before it was made."""
    import mlflow

    from harness import tracking

    try:
        client = client or _tracking_client(spec)
        if attempt.status != "FINISHED":
            tracking.record_error(client, spec.run_id, attempt.status, attempt.message)
        if attempt.run_started:
            tracking.retry_while_locked(lambda: mlflow.end_run(attempt.status))  # also stops the system metrics
        else:
            client.set_terminated(spec.run_id, attempt.status)
    except Exception as error:  # the store itself failed: the runner marks the run from outside
        _log(f"--- could not end the MLflow run: {first_line(error)}")


def _log(line: str) -> None:
    """A line in worker.log (stderr); on a full disk the line is lost, not the run's end."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _now() -> str:
    """Local wall-clock time to the millisecond, as the worker log shows it."""
    now = time.time()
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d}"


def _load_inputs(spec: RunSpec, config: TrainConfig):
    from harness.data import load_cifar10
    from harness.splits import LabelSplit

    data = load_cifar10(spec.data_dir)
    split = LabelSplit.load(spec.split_path)
    if split.digest != spec.split_digest:
        raise RuntimeError(f"the split at {spec.split_path} has digest {split.digest}, but the run was "
                           f"planned with {spec.split_digest}")
    if split.dataset_identity != data.identity:
        raise RuntimeError(f"the split at {spec.split_path} indexes {split.dataset_identity}, "
                           f"but {spec.data_dir} holds {data.identity}")
    work_dir = Path(spec.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    inputs = RunInputs(config=config, data=data, labeled_indices=split.labeled_indices,
                       split_digest=split.digest, work_dir=work_dir)
    return inputs, split


def _record_run_facts(client, spec: RunSpec, config: TrainConfig, inputs: RunInputs, split) -> None:
    """Params, tags, split and environment: what the numbers of this run depend on."""
    from harness import tracking

    from implementations import implementation

    ran_by = implementation(spec.impl)
    used = ran_by.fields_read(config.algorithm)  # a run records only what it reads
    tracking.log_params_once(client, spec.run_id, {**{key: value for key, value in config.as_params().items()
                                                      if key in used}, "labels": spec.labels})
    tags: dict[str, object] = {
        "data_identity": inputs.data.identity,
        "data_official": str(inputs.data.official).lower(),
        "data_dir": inputs.data.source_dir or spec.data_dir,
        **tracking.git_info(),
        **ran_by.provenance(),  # the code beyond this project's that the run executes (TorchSSL's commit)
    }
    tracking.log_tags(client, spec.run_id, tags)
    tracking.log_environment(client, spec.run_id, tracking.environment_info(config.device))
    tracking.log_method_sheet(client, spec.run_id, ran_by.method_sheet(config))
    tracking.log_split(client, spec.run_id, split, spec.split_path)


def _record_result(client, spec: RunSpec, inputs: RunInputs, result) -> None:
    from harness import tracking

    tracking.log_metrics_at(client, spec.run_id, {interface.SUMMARY_BEST_TOP1: result.best_top1,
                                                  interface.SUMMARY_BEST_ITERATION: result.best_iteration,
                                                  interface.SUMMARY_ITERATIONS: result.iterations}, step=result.iterations)
    if result.confusion_matrix is not None:
        tracking.log_confusion_matrix_figure(client, spec.run_id, result.confusion_matrix, inputs.data.class_names,
                                             title=f"{spec.run_name}, iteration {result.iterations}")
    # Implementation facts: namespaced keys ("torchssl.lr") are the arguments it ran with -> params;
    # plain keys ("device", "torchssl_commit") are facts about this execution -> tags.
    params = {key: value for key, value in result.extra.items() if "." in key}
    tags = {key: value for key, value in result.extra.items() if "." not in key}
    tracking.log_params_once(client, spec.run_id, params)
    tracking.log_tags(client, spec.run_id, tags)


if __name__ == "__main__":
    sys.exit(main())
