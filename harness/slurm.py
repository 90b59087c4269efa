"""`bench run --executor slurm`: every run of the grid as a Slurm job, submitted through submitit.

A job runs the same unit of work as a local run, `python -m harness.worker <spec>`, under `RunJob`. When Slurm
is about to stop the job (time limit or preemption: submitit's USR2, `signal_delay_s` before the end), `RunJob`
stops the worker with SIGTERM (it ends its MLflow run KILLED, naming the checkpoint it kept) and submitit
requeues the job; the requeued job starts the worker again, which resumes from that checkpoint in the same
MLflow run. Any number of requeues up to `max_requeues`.

What was submitted is recorded per run (`slurm_job.json` in the run's folder), so that the same command again,
`bench status` and `bench cancel` find the job: a run whose job is queued or running is never submitted twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import click
import psutil
import submitit

from harness import tracking
from harness.console import percent, print_rows
from harness.grid_runs import GridResult, RunOutcome, end_parent, prepare_run
from harness.launch import worker_command, worker_environment
from harness.layout import run_folder, worker_holds
from harness.plan import GridPlan, PlannedRun
from implementations.common import write_text_atomically
from harness.worker import EXIT_FAILED, EXIT_FINISHED, LOG_FILE, PROGRESS_FILE, SPEC_FILE, hold_run_lock
from implementations.interface import EVAL_TOP1

JOB_FILE = "slurm_job.json"
# Slurm states in which a job will still run the worker: submitting its run again would train it twice.
LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                         "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for; from a TOML file (`--slurm-config`) with command-line options on top."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_minutes: float = 24 * 60  # per job; a run longer than this goes on in requeued jobs
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    mem_gb: int = 32
    sbatch_lines: tuple[str, ...] = ()  # extra "#SBATCH" options, e.g. "--constraint=a100"
    setup: tuple[str, ...] = ()  # shell lines before the job starts, e.g. "source .venv/bin/activate"
    max_parallel: int = 256  # jobs of the array running at once
    max_requeues: int = 20  # time-limit or preemption requeues of one job
    signal_delay_s: int = 120  # how long before the time limit Slurm warns the job
    cluster: str = "slurm"  # "local": submitit's local executor (jobs as processes here; tests and trials)

    @classmethod
    def from_file(cls, path: Path | None, **overrides) -> "SlurmOptions":
        values: dict = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as error:
                raise ValueError(f"Cannot read the Slurm config {path}: {error}.") from None
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"The Slurm config {path} has unknown keys {', '.join(unknown)}; known keys: "
                                 f"{', '.join(sorted(known))}.")
        values.update({key: value for key, value in overrides.items() if value not in (None, ())})
        for key in ("sbatch_lines", "setup"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)

    def slurm_parameters(self, job_name: str) -> dict:
        """The job's settings under the names of submitit's SlurmExecutor (and of its sbatch script maker)."""
        return {
            "job_name": job_name, "time": max(1, round(self.time_minutes)), "partition": self.partition,
            "account": self.account, "qos": self.qos, "nodes": 1, "ntasks_per_node": 1,
            "gpus_per_node": self.gpus_per_job, "cpus_per_task": self.cpus_per_job, "mem": f"{self.mem_gb}GB",
            "setup": list(self.setup), "array_parallelism": self.max_parallel, "signal_delay_s": self.signal_delay_s,
            "additional_parameters": dict(_sbatch_option(line) for line in self.sbatch_lines),
        }

    def executor(self, folder: Path, job_name: str) -> submitit.Executor:
        if self.cluster == "local":
            executor = submitit.LocalExecutor(folder, max_num_timeout=self.max_requeues)
            executor.update_parameters(timeout_min=float(self.time_minutes), gpus_per_node=self.gpus_per_job,
                                       signal_delay_s=self.signal_delay_s, setup=list(self.setup))
            return executor
        executor = submitit.SlurmExecutor(folder, max_num_timeout=self.max_requeues)
        executor.update_parameters(**{key: value for key, value in self.slurm_parameters(job_name).items()
                                      if value not in (None, {})})
        return executor


def _sbatch_option(line: str) -> tuple[str, object]:
    """"--constraint=a100" or "#SBATCH --constraint=a100" -> ("constraint", "a100"); a bare flag -> True."""
    text = line.strip().removeprefix("#SBATCH").strip().lstrip("-")
    key, _, value = text.partition("=")
    if not key:
        raise ValueError(f"'{line}' is not an sbatch option (e.g. --constraint=a100).")
    return key.replace("-", "_"), value if value else True


def sbatch_script(options: SlurmOptions, folder: Path, job_name: str, jobs: int) -> str:
    """The sbatch script of the job array of `jobs` runs, as submitit writes it (its own function, with the
    settings `executor` gives it); works without Slurm installed."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    parameters = {key: value for key, value in options.slurm_parameters(job_name).items() if value not in (None, {})}
    return _make_sbatch_string(command=command, folder=folder, map_count=jobs, **parameters)


class RunJob(submitit.helpers.Checkpointable):
    """One run as a job: the worker on the run's spec, stopped and requeued when Slurm says time is up."""

    def __init__(self, spec_path: str, stop_seconds: float):
        self.spec_path = spec_path
        self.stop_seconds = stop_seconds
        self._worker: subprocess.Popen | None = None

    def __call__(self) -> int:
        environment = worker_environment(os.environ)  # the same as a local run's (launch.py)
        work_dir = Path(self.spec_path).parent
        with open(work_dir / LOG_FILE, "ab") as log:
            self._worker = subprocess.Popen(worker_command(self.spec_path),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                            env=environment, preexec_fn=_prepare_worker)
            try:
                return_code = self._worker.wait()
            except BaseException:  # the job is cancelled (scancel, or a local job's SIGINT): so is its run
                self._stop_worker()
                raise
        if return_code not in (EXIT_FINISHED, EXIT_FAILED):  # a FAILED run is recorded in MLflow, not a job failure
            raise RuntimeError(f"the worker of {self.spec_path} ended with exit code {return_code}; see {log.name}")
        return return_code

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        self._stop_worker()
        return submitit.helpers.DelayedSubmission(RunJob(self.spec_path, self.stop_seconds))

    def _stop_worker(self) -> None:
        """SIGTERM: the worker ends its run KILLED, its checkpoint kept. The job waits for that, within the warning
        time Slurm gives before it kills the job, so that no worker outlives its job.

        Called from submitit's signal handler, which interrupts `__call__`'s `wait()` while that holds the Popen's
        wait lock: another `wait()` here would never see the worker end (or, without a timeout, never return).
        So this watches the worker's process state instead, and leaves reaping it to the interrupted wait."""
        if self._worker is None or not _running(self._worker.pid):
            return
        self._worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        while _running(self._worker.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _running(self._worker.pid):
            self._worker.kill()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_worker": None}


def _running(pid: int) -> bool:
    """Not yet ended: a process that ended but is not yet reaped (a zombie) has ended."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _libc_prctl():
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl  # Linux
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # looked up here: between fork and exec, loading a library could deadlock
PR_SET_PDEATHSIG = 1


def _prepare_worker() -> None:
    """In the worker, before it starts: it ignores USR2, since Slurm may signal every process of the job and the
    job's own handler (submitit's) is what stops the worker and requeues; and it gets SIGTERM when the job's
    process dies however it dies (Linux), so that it ends its run rather than train on as an orphan."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass
class JobRecord:
    job_id: str
    cluster: str
    folder: str  # submitit's folder: the job's sbatch script, stdout, stderr
    run_id: str

    def save(self, run_folder: Path) -> None:
        write_text_atomically(run_folder / JOB_FILE, json.dumps(self.__dict__))

    @classmethod
    def load(cls, run_folder: Path) -> "JobRecord | None":
        try:
            return cls(**json.loads((run_folder / JOB_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def state(self) -> str:
        """Slurm's state of the job (sacct), or for a local job RUNNING while its controller lives."""
        if self.cluster == "local":  # the job id is its controller's pid
            try:
                return "ENDED" if psutil.Process(int(self.job_id)).status() == psutil.STATUS_ZOMBIE else "RUNNING"
            except psutil.NoSuchProcess:
                return "ENDED"
        return submitit.SlurmJob(self.folder, self.job_id).state

    def cancel(self) -> None:
        if self.cluster == "local":
            try:
                os.kill(int(self.job_id), signal.SIGINT)
            except ProcessLookupError:
                pass
            return
        submitit.SlurmJob(self.folder, self.job_id).cancel(check=False)


def submit(options: SlurmOptions, folder: Path, specs: list[Path], job_name: str) -> list[submitit.Job]:
    """One job per spec, as one job array."""
    executor = options.executor(folder, job_name)
    with _detached_output(options.cluster == "local"), executor.batch():
        jobs = [executor.submit(RunJob(str(spec), options.signal_delay_s / 2)) for spec in specs]
    return jobs


@contextlib.contextmanager
def _detached_output(detach: bool):
    """Local jobs are processes started here, which would inherit this terminal's (or pipe's) stdout and stderr
    and keep a caller reading them waiting until they end: they get /dev/null (their logs go to their folder)."""
    if not detach:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (*saved, null):
            os.close(descriptor)


# --- a grid's runs as jobs: bench run --executor slurm, bench status, bench cancel ---------------------------


def submit_grid(plan: GridPlan, client, experiment_id: str, pending: list[PlannedRun],
                     outcomes: dict[str, RunOutcome]) -> GridResult:
    """Submit every pending run as a job (one job array) and return: a run whose job is still queued or
    running, or whose worker runs here, is left as it is."""
    options: SlurmOptions = plan.options.slurm
    to_submit = []
    touched_parents: set = set()
    with tracking.store_lock(plan.output_dir):
        for planned in pending:
            folder = run_folder(plan.output_dir, plan.options.experiment, planned.run_key)
            record = JobRecord.load(folder)
            state = record.state() if record is not None else None
            if state in LIVE_STATES:
                outcomes[planned.run_key] = RunOutcome(planned.name, record.run_id, f"{state} (job {record.job_id})")
                continue
            run_lock = hold_run_lock(folder)
            if run_lock is None:
                outcomes[planned.run_key] = RunOutcome(planned.name, "", "RUNNING (a worker of `bench run` here)")
                continue
            run_lock.close()
            existing = tracking.find_child_run(client, experiment_id, planned.run_key)
            spec = prepare_run(plan, client, experiment_id, planned, existing, folder, touched_parents, click.echo)
            to_submit.append((planned, folder, spec))
        if to_submit:
            jobs_folder = plan.output_dir / "slurm" / "%j"
            jobs = submit(options, jobs_folder, [Path(spec.work_dir) / SPEC_FILE for _, _, spec in to_submit],
                                job_name=plan.options.experiment)
            for (planned, folder, spec), job in zip(to_submit, jobs):
                JobRecord(str(job.job_id), options.cluster, str(jobs_folder), spec.run_id).save(folder)
                client.update_run(spec.run_id, status="SCHEDULED")
                outcomes[planned.run_key] = RunOutcome(planned.name, spec.run_id, f"SUBMITTED (job {job.job_id})")
    outcomes_in_order = [outcomes[run.run_key] for run in plan.runs]
    rows = [("run", "state", "MLflow run id")] + [(outcome.name, "FINISHED (earlier)" if outcome.previously_finished
                                                   else outcome.status, outcome.run_id) for outcome in outcomes_in_order]
    print_rows(rows)
    click.echo(f"\n{len(to_submit)} job(s) submitted. Watch them: `bench status --output-dir {plan.output_dir}`; "
               f"stop them: `bench cancel --output-dir {plan.output_dir}`. The same command again submits only what is "
               "neither queued, running nor finished.")
    return GridResult(outcomes_in_order, interrupted=False, submitted=True)


def _store_client(output_dir: Path, tracking_uri: str | None) -> tracking.LockRetryingClient:
    store = tracking.resolve_store(output_dir, tracking_uri)
    tracking.check_reachable(store)  # before MLflow opens it: a damaged file is our sentence, not its traceback
    return store.client()


def _submitted_runs(output_dir: Path, experiment: str, client: tracking.LockRetryingClient):
    """(run folder, job record, MLflow run or None) of every run of the experiment submitted as a job."""
    folder = Path(output_dir) / tracking.safe_folder_name(experiment)
    records = [(path.parent, JobRecord.load(path.parent)) for path in sorted(folder.glob(f"*/{JOB_FILE}"))]
    if not records:
        raise click.ClickException(f"No run of experiment '{experiment}' under {output_dir} was submitted to Slurm; "
                                   "submit with `bench run --executor slurm …`.")
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
    client = _store_client(output_dir, tracking_uri)
    submitted = []
    for folder, record, run in _submitted_runs(output_dir, experiment, client):
        state = record.state() if record is not None else "?"
        if run is not None and run.info.status in ("RUNNING", "SCHEDULED") and state not in LIVE_STATES \
                and not worker_holds(folder):  # the job is over and no worker holds the run: it was killed
            tracking.end_run_with_error(
                client, run.info.run_id, "KILLED",
                f"its Slurm job {record.job_id} ended ({state}) without ending the run; the same `bench run "
                "--executor slurm` submits it again, and it resumes from its last checkpoint")
            run = client.get_run(run.info.run_id)
        submitted.append((folder, record, run, state))
    for parent in {run.data.tags.get(tracking.PARENT_RUN_ID_TAG) for _, _, run, _ in submitted if run is not None} - {None}:
        end_parent(client, client.get_run(parent).info.experiment_id, parent)
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
                     f"{progress.get('iteration', 0)}/{progress.get('total', '?')}", percent(top1)))
    print_rows(rows)
    return 0


def cancel_jobs(output_dir: Path, experiment: str, tracking_uri: str | None) -> int:
    """`bench cancel`: cancel every queued or running job of the experiment's submitted runs; each run keeps its
    checkpoint, and `bench run --executor slurm` with the same options submits it again."""
    cancelled = 0
    for folder, record, run in _submitted_runs(output_dir, experiment, _store_client(output_dir, tracking_uri)):
        if record is not None and record.state() in LIVE_STATES:
            record.cancel()
            cancelled += 1
            click.echo(f"cancelled job {record.job_id} ({run.info.run_name if run is not None else folder.name})")
    click.echo(f"{cancelled} job(s) cancelled.")
    return 0
