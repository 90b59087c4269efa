"""A run whose worker is SIGKILLed mid-way ends KILLED with its checkpoint kept; the same `bench run`
again resumes it in the same MLflow run, and it ends with exactly the metrics of an uninterrupted run
of the same spec (CPU, deterministic), no (key, step) logged twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from harness import tracking
from implementations import interface as names
from tests.fixtures_data import SUBSET_DIR

pytestmark = pytest.mark.slow

ITERATIONS = 60  # smoke preset: checkpoint and evaluation every 20 iterations, training signals every 5
RUN = ["run", "--impl", "own", "--labels", "40", "--seeds", "0", "--preset", "smoke", "--device", "cpu",
       "--iterations", str(ITERATIONS), "--data-dir", str(SUBSET_DIR)]
# Same value whenever the same iterations are computed the same way (not timings).
DETERMINISTIC_KEYS = (names.TRAIN_SUPERVISED_LOSS, names.TRAIN_UNSUPERVISED_LOSS, names.TRAIN_TOTAL_LOSS,
                      names.TRAIN_MASK_RATE, names.TRAIN_LR)


def bench_command(output_dir: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *RUN, "--output-dir", str(output_dir)]


ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}  # the embedded store


def child_run(output_dir: Path):
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    (run,) = [run for run in client.search_runs([experiment.experiment_id])
              if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD]
    return client, run


def kill_worker_after_first_checkpoint(runner: subprocess.Popen, output_dir: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not list(output_dir.glob(f"{tracking.DEFAULT_EXPERIMENT}/*/*/checkpoint.pt")):
        assert runner.poll() is None, "bench run ended before the first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    (worker,) = [process for process in psutil.Process(runner.pid).children(recursive=True)
                 if "harness.worker" in " ".join(process.cmdline())]
    worker.send_signal(signal.SIGKILL)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    interrupted_dir, reference_dir = tmp_path_factory.mktemp("interrupted"), tmp_path_factory.mktemp("uninterrupted")
    # The uninterrupted reference runs meanwhile, in its own store (same spec, same thread count).
    reference = subprocess.Popen(bench_command(reference_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=ENVIRONMENT)
    runner = subprocess.Popen(bench_command(interrupted_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=ENVIRONMENT)
    kill_worker_after_first_checkpoint(runner, interrupted_dir)
    killed_stdout, killed_stderr = runner.communicate(timeout=300)
    client, killed = child_run(interrupted_dir)
    work_dir = interrupted_dir / tracking.DEFAULT_EXPERIMENT / killed.data.tags["run_key"] / killed.info.run_id
    checkpoint_kept = (work_dir / "checkpoint.pt").exists()

    resumed = subprocess.run(bench_command(interrupted_dir), capture_output=True, text=True, timeout=900, env=ENVIRONMENT)
    reference_stdout, reference_stderr = reference.communicate(timeout=900)
    assert reference.returncode == 0, reference_stdout + reference_stderr
    return {"killed": killed, "killed_returncode": runner.returncode, "killed_stdout": killed_stdout,
            "killed_stderr": killed_stderr, "checkpoint_kept": checkpoint_kept, "resumed": resumed,
            "client": client, "resumed_run": child_run(interrupted_dir)[1],
            "reference_client": child_run(reference_dir)[0], "reference_run": child_run(reference_dir)[1]}


def history(client: MlflowClient, run, key: str) -> list[tuple[int, float]]:
    return [(point.step, point.value) for point in client.get_metric_history(run.info.run_id, key)]


def test_a_sigkilled_worker_leaves_its_run_killed_with_the_checkpoint_kept(scenario):
    killed = scenario["killed"]
    assert killed.info.status == "KILLED"
    assert "SIGKILL" in killed.data.tags[tracking.ERROR_TAG]
    assert scenario["checkpoint_kept"]
    assert scenario["killed_returncode"] == 1
    assert "KILLED" in scenario["killed_stdout"]


def test_the_same_command_resumes_the_run_in_the_same_mlflow_run_and_finishes_it(scenario):
    resumed = scenario["resumed"]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 resumed" in resumed.stdout
    run = scenario["resumed_run"]
    assert run.info.run_id == scenario["killed"].info.run_id
    assert run.info.status == "FINISHED"
    assert tracking.ERROR_TAG not in run.data.tags  # the previous attempt's error is cleared
    assert run.data.metrics["summary/iterations"] == ITERATIONS


def test_the_resumed_run_ends_with_the_metrics_of_an_uninterrupted_run(scenario):
    run, reference = scenario["resumed_run"], scenario["reference_run"]
    evaluation_keys = sorted(key for key in reference.data.metrics if key.startswith("eval/"))
    assert names.EVAL_TOP1 in evaluation_keys
    for key in evaluation_keys:  # bitwise: every evaluation, including the ones after the resume
        assert history(scenario["client"], run, key) == history(scenario["reference_client"], reference, key), key
    for key in DETERMINISTIC_KEYS:
        assert history(scenario["client"], run, key) == history(scenario["reference_client"], reference, key), key
    summary = {key: value for key, value in run.data.metrics.items() if key.startswith("summary/")}
    assert summary == {key: value for key, value in reference.data.metrics.items() if key.startswith("summary/")}


def test_no_metric_step_is_logged_twice_across_the_kill_and_the_resume(scenario):
    client, run = scenario["client"], scenario["resumed_run"]
    for key in run.data.metrics:
        steps = [step for step, _ in history(client, run, key)]
        assert len(steps) == len(set(steps)), key
    assert [step for step, _ in history(client, run, names.TRAIN_TOTAL_LOSS)] == list(range(5, ITERATIONS + 1, 5))
