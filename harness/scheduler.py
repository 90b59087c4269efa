"""The local scheduler: claims runs (at most max_parallel at once), starts their workers or attaches to the
workers of another `bench run`, follows their progress, records how they end, and stops them on Ctrl-C.

Several `bench run` may work on one store and output dir at once (overlapping grids, a second terminal, the
same command after the first runner died). Two locks keep them apart:
- the store lock (<output_dir>/store.lock, tracking.store_lock), held for the moments a runner creates the
  embedded store or finds or creates the experiment, a parent or a child run, so that each exists once;
- the run lock (<output_dir>/<experiment>/<run key>/worker.lock), held by the worker process of that run
  for its whole life (the runner takes it and hands the open file to the worker it starts). A runner that
  finds it held attaches to that worker: shows its progress (from progress.json in its work dir) and waits
  for it to end.
A run's work dir is <run key>/<MLflow run id>: a checkpoint belongs to the one MLflow run it was made for,
so another store's run (same output dir, other --tracking-uri) never adopts it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from harness import tracking
from harness.console import GridBars, RunBar
from harness.grid_runs import RunOutcome, outcome_from_store, prepare_run
from harness.launch import GpuSlots, worker_command, worker_environment
from harness.layout import process_alive, read_worker_file, run_folder, worker_holds
from harness.plan import GridPlan, PlannedRun
from harness.worker import (EXIT_BUSY, LOG_FILE, PROGRESS_FILE, RUN_LOCK_FD_VARIABLE, SPEC_FILE, RunSpec,
                            hold_run_lock, write_worker_file)
from harness.worker_events import FREE_SPACE, ended_words
from implementations.common import first_line, full_disk_file, is_disk_full


SECONDS_TO_END_AFTER_STOP = 60  # a stopped worker gets this long to end its MLflow run before SIGKILL


LOG_TAIL_LINES = 20


@dataclass
class WatchedRun:
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
    bar: RunBar | None = None
    last_iteration: int = 0
    last_top1: float | None = None
    last_checkpoint: int | None = None
    worker_seconds: float | None = None  # the worker's own time, from its "finished" event
    disk_full_message: str = ""  # a full disk ended it: the sentence that says so (the worker's, when it sent one)

    @property
    def name(self) -> str:
        return self.planned.name


class Scheduler:
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
        self.active: dict[str, WatchedRun] = {}  # by run key
        self.outcomes = outcomes
        self.events: queue.Queue = queue.Queue()
        self.gpu_slots = GpuSlots(plan.gpu_ids)
        self.bars = GridBars(total=len(pending))
        self.stopping = False
        self.stop_signal = signal.SIGTERM  # forwarded to the workers: a Ctrl-C reaches them as the SIGINT it was
        self.touched_parents: set[str] = set()
        self.relaunches: dict[str, int] = {}

    def run(self) -> None:
        # Ctrl-C and SIGTERM both stop the grid cleanly (SIGINT explicitly too: a shell starts background
        # jobs with it ignored, and then Python would never raise KeyboardInterrupt).
        previous_sigterm = signal.signal(signal.SIGTERM, self._interrupted)
        previous_sigint = signal.signal(signal.SIGINT, self._interrupted)
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
            self.bars.close()

    def _interrupted(self, signal_number: int, _frame) -> None:
        if not self.stopping:
            self.stop_signal = signal.Signals(signal_number)
        raise KeyboardInterrupt

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
                    self.outcomes[planned.run_key] = outcome_from_store(self.client, planned.name, existing.info.run_id)
                    self.outcomes[planned.run_key].previously_finished = True
                    self.bars.run_skipped()
                    run_lock.close()
                    return
                spec = prepare_run(plan, self.client, self.experiment_id, planned, existing, folder,
                                    self.touched_parents, self.bars.write)
                write_worker_file(folder, {"run_id": spec.run_id, "work_dir": spec.work_dir, "runner_pid": os.getpid()})
            except BaseException:
                run_lock.close()
                raise
        self._launch(planned, spec, run_lock)

    def _attach(self, planned: PlannedRun, folder: Path) -> None:
        """Another worker holds the run lock: follow it until it ends."""
        holder = read_worker_file(folder)
        active = WatchedRun(planned, holder.get("run_id", ""), Path(holder.get("work_dir", folder)),
                         worker_pid=holder.get("worker_pid"), started=time.monotonic())
        active.adopted = not process_alive(holder.get("runner_pid"))
        self.active[planned.run_key] = active
        whose = "whose `bench run` is gone" if active.adopted else "of another `bench run`"
        active.bar = self.bars.run_started(planned.name, planned.config.iterations,
                                               note=f"attached to its running worker ({whose})")
        self._show_attached_progress(active)

    def _launch(self, planned: PlannedRun, spec: RunSpec, run_lock) -> None:
        folder = Path(spec.work_dir)
        active = WatchedRun(planned, spec.run_id, folder)
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
        active.bar = self.bars.run_started(planned.name, planned.config.iterations)
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

    def _on_event(self, active: WatchedRun, event: dict) -> None:
        if event.get("event") == "progress":
            active.last_iteration = int(event.get("iteration", 0))
            active.last_checkpoint = event.get("checkpoint")
            self.bars.run_progress(active.bar, active.name, active.last_iteration, event.get("top1"),
                                       bool(event.get("evaluated")))
        elif event.get("event") == "finished" and event.get("wall_seconds") is not None:
            active.worker_seconds = float(event["wall_seconds"])
            if event.get("disk_full"):
                active.disk_full_message = str(event.get("message", ""))

    def _show_attached_progress(self, active: WatchedRun) -> None:
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
            if worker_holds(run_folder(self.plan.output_dir, self.plan.options.experiment, key)):
                continue
            del self.active[key]  # the worker is gone
            self._record_end(active, self._ended_outcome(active, None))

    def _on_exit(self, active: WatchedRun, return_code: int) -> None:
        key = active.planned.run_key
        del self.active[key]
        kill_process_group(active.process.pid)  # anything the worker left behind (e.g. TorchSSL's process)
        self.gpu_slots.give_back(active.gpu_id)
        if return_code == EXIT_BUSY:  # another `bench run` started it in the moment between: follow that one
            self.bars.run_ended(active.bar, None, "")
            self.pending.appendleft(active.planned)
            return
        self._record_end(active, self._ended_outcome(active, return_code))

    def _ended_outcome(self, active: WatchedRun, return_code: int | None) -> RunOutcome:
        try:
            return self._outcome_recorded(active, return_code)
        except Exception as error:  # the store cannot be reached: what the worker logged waits in its journal
            if is_disk_full(error):
                active.disk_full_message = active.disk_full_message or self._store_full_message(active, error)
                message = active.disk_full_message
            else:
                message = (f"the MLflow store could not be read ({first_line(error)}); run the same command again once "
                           "it is reachable: the run's numbers wait in its work dir")
            return RunOutcome(active.name, active.run_id, "UNRECORDED", log_path=active.work_dir / LOG_FILE,
                              message=message)

    def _store_full_message(self, active: WatchedRun, error: Exception) -> str:
        named = full_disk_file(error)
        store = Path(named) if named else tracking.sqlite_path(self.plan.store.tracking_uri) or active.work_dir / LOG_FILE
        cause = f"the disk holding {store.parent} is full, so the MLflow store could not record how the run ended"
        return ended_words(cause, active.last_iteration, active.last_checkpoint) + FREE_SPACE

    def _outcome_recorded(self, active: WatchedRun, return_code: int | None) -> RunOutcome:
        outcome = outcome_from_store(self.client, active.name, active.run_id) if active.run_id else \
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
            outcome = outcome_from_store(self.client, active.name, active.run_id)
        if active.process is not None:
            outcome.wall_seconds = active.worker_seconds or time.monotonic() - active.started
            outcome.log_path = active.work_dir / LOG_FILE
        return outcome

    def _record_end(self, active: WatchedRun, outcome: RunOutcome) -> None:
        key = active.planned.run_key
        attached = active.process is None
        # An attached worker that stopped unfinished (killed by its user, or by a closed terminal's runner) is
        # resumed by this runner, once; its own runner may be gone.
        if attached and outcome.status != "FINISHED" and not self.stopping and self.relaunches.get(key, 0) < 1:
            self.relaunches[key] = self.relaunches.get(key, 0) + 1
            self.bars.run_ended(active.bar, None, "")
            self.bars.write(f"{active.name}: the worker this runner followed ended {outcome.status}; resuming it.")
            self.pending.appendleft(active.planned)
            return
        self.outcomes[key] = outcome
        quiet = outcome.status == "FINISHED" or outcome.log_path is None or active.disk_full_message
        tail = "" if quiet else _log_tail(outcome.log_path, active.log_offset)  # a full disk: the sentence says all
        self.bars.run_ended(active.bar, outcome, tail)

    def _stop_all(self) -> None:
        """Ctrl-C or SIGTERM: start nothing more; stop the workers this runner started or adopted; wait until
        each has ended its run."""
        self.stopping = True
        self.pending.clear()
        others = [active for active in self.active.values() if active.process is None and not active.adopted]
        for active in others:
            del self.active[active.planned.run_key]
            self.bars.run_ended(active.bar, None, "")
        if others:
            self.bars.write(f"Leaving {len(others)} run(s) to the `bench run` that started them: "
                                + ", ".join(active.name for active in others) + ".")
        self.bars.write("Stopping: each running worker ends its MLflow run as KILLED and keeps its last checkpoint "
                            "(which one, each run's line below says; Ctrl-C again to kill them at once)...")
        for active in self.active.values():
            pid = active.process.pid if active.process is not None else active.worker_pid
            if pid:
                signal_process_group(pid, self.stop_signal)
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
                        signal_process_group(pid, signal.SIGKILL)
                deadline = float("inf")


def signal_process_group(pid: int, signal_number: int) -> None:
    try:
        os.killpg(pid, signal_number)
    except (ProcessLookupError, PermissionError):
        pass


def kill_process_group(pid: int) -> None:
    signal_process_group(pid, signal.SIGKILL)


def _log_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])

