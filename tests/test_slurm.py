"""`bench run --executor slurm`, `bench status`, `bench cancel`: the real submission path through submitit.

Without a cluster, `cluster = "local"` in the Slurm config makes submitit's local executor run each job as a
process here, with its time limit, its USR2 warning and its requeue: the same `RunJob`, checkpoint and
requeue code as on Slurm. The sbatch script is submitit's own, checked line by line for an option set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from harness import tracking
from harness.launch import KEEP_FREED_MEMORY_TUNABLES
from harness.slurm import SlurmOptions, sbatch_script
from implementations import interface
from implementations.interface import DEFAULT_EXPERIMENT
from tests.fixtures_data import SUBSET_DIR

ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


def bench(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *arguments], capture_output=True, text=True,
                          timeout=timeout, env=ENVIRONMENT)


README_EXAMPLE = """
partition = "gpu"
account = "mylab"
time_minutes = 1440
gpus_per_job = 1
cpus_per_job = 8
mem_gb = 32
sbatch_lines = ["--constraint=a100"]
setup = ["source ~/ssl-bench/.venv/bin/activate"]
"""


def test_the_sbatch_script_of_the_readme_example_line_by_line(tmp_path):
    (tmp_path / "slurm.toml").write_text(README_EXAMPLE)
    options = SlurmOptions.from_file(tmp_path / "slurm.toml", time_minutes=600)  # an option given wins
    folder = Path("/home/me/runs/slurm/%j")
    lines = sbatch_script(options, folder, "cifar10-fixmatch", jobs=18).splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --account=mylab",
        "#SBATCH --array=0-17%18",
        "#SBATCH --constraint=a100",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --error=/home/me/runs/slurm/%A_%a/%A_%a_0_log.err",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --job-name=cifar10-fixmatch",
        "#SBATCH --mem=32GB",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=/home/me/runs/slurm/%A_%a/%A_%a_0_log.out",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=600",
        "#SBATCH --wckey=submitit",
    ]
    body = [line for line in lines if line and not line.startswith("#")]
    assert body[0] == "source ~/ssl-bench/.venv/bin/activate"
    assert body[1] == "export SUBMITIT_EXECUTOR=slurm"
    assert body[2].startswith("srun --unbuffered --output /home/me/runs/slurm/%A_%a/%A_%a_%t_log.out")
    assert body[2].endswith(f"{sys.executable} -u -m submitit.core._submit /home/me/runs/slurm/%j")


def test_a_slurm_config_with_an_unknown_key_is_one_sentence(tmp_path):
    (tmp_path / "slurm.toml").write_text('partition = "gpu"\ngpus = 2\n')
    ran = bench("run", "--executor", "slurm", "--slurm-config", str(tmp_path / "slurm.toml"), "--labels", "40",
                "--allow-sqlite", "--output-dir", str(tmp_path / "runs"), "--data-dir", str(SUBSET_DIR))
    assert ran.returncode == 2
    assert "has unknown keys gpus; known keys:" in ran.stderr and "Traceback" not in ran.stderr


def test_a_sqlite_store_is_refused_for_slurm_before_anything_is_submitted(tmp_path):
    ran = bench("run", "--executor", "slurm", "--labels", "40", "--preset", "smoke", "--output-dir",
                str(tmp_path / "runs"), "--data-dir", str(SUBSET_DIR))
    assert ran.returncode == 2, ran.stdout + ran.stderr
    message = ran.stderr.strip().splitlines()[-1]
    assert "--executor slurm needs an MLflow server" in message and "mlflow server --backend-store-uri" in message
    assert "--allow-sqlite" in message and "Traceback" not in ran.stderr
    assert not (tmp_path / "runs" / "slurm").exists() and not (tmp_path / "runs" / "mlflow.db").exists()


# ---- end to end on submitit's local executor -----------------------------------------------------------

LOCAL_CLUSTER = """
cluster = "local"
time_minutes = {minutes}
signal_delay_s = {delay}
gpus_per_job = 0
max_requeues = 10
"""
ITERATIONS = 60


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"waited {seconds:.0f} s for {what}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def children(output_dir: Path) -> list:
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    return [run for run in client.search_runs([experiment.experiment_id])
            if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD], client


def progress_of(output_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in output_dir.glob(f"{DEFAULT_EXPERIMENT}/*/*/progress.json")]


@pytest.mark.slow
def test_a_grid_of_local_jobs_is_requeued_at_its_time_limit_and_finishes_each_run_once(tmp_path):
    (tmp_path / "local.toml").write_text(LOCAL_CLUSTER.format(minutes=30, delay=30))
    output_dir = tmp_path / "runs"
    command = ["run", "--executor", "slurm", "--slurm-config", str(tmp_path / "local.toml"), "--allow-sqlite",
               "--impl", "own", "--labels", "40", "--seeds", "0,1", "--preset", "smoke", "--iterations",
               str(ITERATIONS), "--device", "cpu", "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir)]
    submitted = bench(*command)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_ids = re.findall(r"SUBMITTED \(job (\d+)\)", submitted.stdout)
    assert len(job_ids) == 2 and "bench status --output-dir" in submitted.stdout

    # The same command while the jobs live submits nothing.
    again = bench(*command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 job(s) submitted" in again.stdout and again.stdout.count("RUNNING (job") == 2
    status = bench("status", "--output-dir", str(output_dir))
    assert status.returncode == 0 and all(job_id in status.stdout for job_id in job_ids)

    # Once both have a checkpoint, each job gets Slurm's time-limit warning (USR2 to the job's process, which
    # for a local job is the controller's child): it stops its worker and is requeued.
    wait_until(lambda: len(progress := progress_of(output_dir)) == 2
               and all((event.get("checkpoint") or 0) >= 20 for event in progress), 300, "a checkpoint of each run")
    for job_id in job_ids:
        (task,) = psutil.Process(int(job_id)).children()
        task.send_signal(signal.SIGUSR2)

    wait_until(lambda: all(run.info.status == "FINISHED" for run in children(output_dir)[0]), 600,
               "both runs to finish")
    runs, client = children(output_dir)
    assert len(runs) == 2
    for run in runs:
        log = (output_dir / DEFAULT_EXPERIMENT / run.data.tags["run_key"] / run.info.run_id
               / "worker.log").read_text()
        assert log.count("--- worker ended FINISHED") == 1, log
        (stopped,) = re.findall(r"--- worker ended KILLED .*: stopped by SIGTERM at iteration (\d+); its checkpoint "
                                r"of iteration (\d+) is kept", log)
        assert 20 <= int(stopped[1]) <= int(stopped[0]) < ITERATIONS, log
        assert log.count("starting") == 2  # the first attempt and the requeued one, in the same MLflow run
        for key in (interface.EVAL_TOP1, interface.TRAIN_TOTAL_LOSS):
            steps = [point.step for point in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), (key, steps)  # no step logged twice across attempts
        top1_steps = sorted(point.step for point in client.get_metric_history(run.info.run_id, interface.EVAL_TOP1))
        assert top1_steps == list(range(20, ITERATIONS + 1, 20))
        assert run.data.metrics["summary/iterations"] == ITERATIONS
        # a job's worker starts with a local worker's environment (test_run_grid checks the same of a local run)
        assert run.data.tags["env.glibc_tunables"] == KEEP_FREED_MEMORY_TUNABLES
    for job_id in job_ids:  # submitit's own log of each job says it requeued it
        job_log = "".join(path.read_text() for path in (output_dir / "slurm" / job_id).glob("*_log.*"))
        assert f"Requeued job {job_id}" in job_log, job_log
    finished = bench(*command)
    assert "0 job(s) submitted" in finished.stdout and finished.stdout.count("FINISHED (earlier)") == 2
    assert bench("status", "--output-dir", str(output_dir)).stdout.count("FINISHED") == 2
    (parent,) = {run.data.tags["mlflow.parentRunId"] for run in runs}
    assert client.get_run(parent).info.status == "FINISHED"  # ended by `bench status`: no runner waits for jobs


@pytest.mark.slow
def test_bench_cancel_stops_the_jobs_and_the_same_command_submits_them_again(tmp_path):
    (tmp_path / "local.toml").write_text(LOCAL_CLUSTER.format(minutes=30, delay=20))
    output_dir = tmp_path / "runs"
    command = ["run", "--executor", "slurm", "--slurm-config", str(tmp_path / "local.toml"), "--allow-sqlite",
               "--impl", "own", "--labels", "40", "--seeds", "0", "--preset", "smoke", "--iterations", "100000",
               "--device", "cpu", "--data-dir", str(SUBSET_DIR), "--output-dir", str(output_dir)]
    submitted = bench(*command)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (job_id,) = re.findall(r"SUBMITTED \(job (\d+)\)", submitted.stdout)
    wait_until(lambda: [run for run in children(output_dir)[0] if run.info.status == "RUNNING"], 120, "the run")
    cancelled = bench("cancel", "--output-dir", str(output_dir))
    assert cancelled.returncode == 0 and f"cancelled job {job_id}" in cancelled.stdout
    # submitit's local cancel: SIGINT to the job's process, SIGKILL a second later. Its worker still ends the run
    # KILLED itself, and does not outlive the job.
    wait_until(lambda: all(run.info.status == "KILLED" for run in children(output_dir)[0]), 120, "the run to stop")
    (worker_file,) = output_dir.glob(f"{DEFAULT_EXPERIMENT}/*/worker.json")
    worker_pid = json.loads(worker_file.read_text())["worker_pid"]
    wait_until(lambda: not alive(worker_pid), 60, "the worker to end")
    (run,) = children(output_dir)[0]
    assert re.match(r"stopped by SIG(TERM|INT) at iteration \d+", run.data.tags[tracking.ERROR_TAG])
    again = bench(*command)
    (new_job,) = re.findall(r"SUBMITTED \(job (\d+)\)", again.stdout)
    assert new_job != job_id
    (run,) = children(output_dir)[0]
    assert run.info.run_id in again.stdout  # the same MLflow run goes on

    # A job killed outright (the node lost, SIGKILL) cannot end its run: `bench status` finds it and ends it.
    wait_until(lambda: children(output_dir)[0][0].info.status == "RUNNING", 120, "the resubmitted run")
    job = psutil.Process(int(new_job))
    for process in [*reversed(job.children(recursive=True)), job]:  # the worker first: it gets SIGTERM when its job dies
        process.kill()
    psutil.wait_procs([job], timeout=30)
    status = bench("status", "--output-dir", str(output_dir))
    assert status.returncode == 0 and "KILLED" in status.stdout, status.stdout + status.stderr
    (run,), client = children(output_dir)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.ERROR_TAG].startswith(f"its Slurm job {new_job} ended (ENDED) without ending the run")
