"""Nothing lost, nothing spliced: real `bench run` processes, a real sqlite store (and a real `mlflow server`),
the smoke preset on real CIFAR-10 images, under the faults a long grid meets.

- kill -9 of the worker after its first checkpoint: the run ends KILLED with the reason, and the same command
  resumes it in the same MLflow run;
- kill -9 of the runner and of the worker at random moments, several times, then the same command: the run's
  curve equals an uninterrupted run's (own, CPU, deterministic), no (key, step) twice;
- the same command after the runner died attaches to the worker still training and exits 0;
- two runners at once on overlapping grids: one parent per (labels, preset), one child per run key, each
  FINISHED by exactly one worker;
- the output dir kept and the store swapped: the run trains afresh in the new store, nothing adopted;
- a torn checkpoint: one sentence naming it and what to do; doing it restarts the run in a new MLflow run;
- the tracking server gone for a while mid-run: training goes on and every number arrives.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from harness import tracking
from implementations import interface as names
from tests.fixtures_data import SUBSET_DIR

pytestmark = pytest.mark.slow

ITERATIONS = 100  # smoke preset: evaluation and checkpoint every 20 iterations, training signals every 5
# One intra-op thread per process: several runners and workers share 2 cores here, and threads that wait for
# each other across processes would only slow every run down (the tiny smoke model gains nothing from two).
ENVIRONMENT = {**{key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"},
               "OMP_NUM_THREADS": "1"}
# Same value whenever the same iterations are computed the same way (not timings).
DETERMINISTIC_KEYS = (names.TRAIN_SUPERVISED_LOSS, names.TRAIN_UNSUPERVISED_LOSS, names.TRAIN_TOTAL_LOSS,
                      names.TRAIN_MASK_RATE, names.TRAIN_LR)


def run_arguments(output_dir: Path, labels: str = "40", seeds: str = "0", *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", "--impl", "own", "--labels", labels, "--seeds", seeds,
            "--preset", "smoke", "--device", "cpu", "--iterations", str(ITERATIONS), "--data-dir", str(SUBSET_DIR),
            "--output-dir", str(output_dir), *extra]


def bench_run(output_dir: Path, *extra: str, labels: str = "40", seeds: str = "0", timeout: float = 600):
    return subprocess.run(run_arguments(output_dir, labels, seeds, *extra), capture_output=True, text=True,
                          env=ENVIRONMENT, timeout=timeout)


def start_run(output_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(run_arguments(output_dir, "40", "0", *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENVIRONMENT)


def store_client(output_dir: Path, uri: str | None = None) -> MlflowClient:
    return MlflowClient(uri or f"sqlite:///{output_dir / 'mlflow.db'}")


def child_runs(client: MlflowClient, view=ViewType.ACTIVE_ONLY):
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    return [run for run in client.search_runs([experiment.experiment_id], run_view_type=view)
            if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(point.step, point.value) for point in client.get_metric_history(run_id, key)]


def the_worker(output_dir: Path) -> psutil.Process | None:
    """The worker process training in this output dir (whoever started it)."""
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "harness.worker" in command and any(str(output_dir) in part for part in command):
            return process
    return None


def wait_for(condition, timeout: float = 300, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def assert_curve_of_an_uninterrupted_run(client, run_id, reference_client, reference_id) -> None:
    evaluation_keys = sorted(key for key in reference_client.get_run(reference_id).data.metrics
                             if key.startswith("eval/"))
    assert names.EVAL_TOP1 in evaluation_keys
    for key in (*evaluation_keys, *DETERMINISTIC_KEYS):
        assert history(client, run_id, key) == history(reference_client, reference_id, key), key
    for key in client.get_run(run_id).data.metrics:
        steps = [step for step, _ in history(client, run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} has a step twice"


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    """The output dir of the uninterrupted run every faulted run must equal."""
    output_dir = tmp_path_factory.mktemp("reference")
    completed = bench_run(output_dir)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return output_dir


@pytest.fixture(scope="module")
def reference(reference_dir):
    client = store_client(reference_dir)
    (run,) = child_runs(client)
    return client, run.info.run_id


def test_a_worker_killed_after_its_first_checkpoint_is_killed_in_mlflow_and_the_same_command_resumes_it(reference, tmp_path):
    runner = start_run(tmp_path)
    checkpoints = lambda: list(tmp_path.glob(f"{tracking.DEFAULT_EXPERIMENT}/*/*/checkpoint.pt"))  # noqa: E731
    wait_for(lambda: checkpoints() or runner.poll() is not None, what="the first checkpoint")
    assert runner.poll() is None, "the run ended before its first checkpoint"
    the_worker(tmp_path).send_signal(signal.SIGKILL)
    stdout, stderr = runner.communicate(timeout=120)
    client = store_client(tmp_path)
    (killed,) = child_runs(client)
    assert runner.returncode == 1 and "KILLED" in stdout
    assert killed.info.status == "KILLED" and "SIGKILL" in killed.data.tags[tracking.ERROR_TAG]
    assert checkpoints(), "its checkpoint is kept"

    resumed = bench_run(tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 resumed from an earlier attempt" in resumed.stdout
    (run,) = child_runs(client)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert tracking.ERROR_TAG not in run.data.tags  # the previous attempt's error is cleared
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)
    reference_client, reference_id = reference
    summary = {key: value for key, value in run.data.metrics.items() if key.startswith("summary/")}
    assert summary == {key: value for key, value in reference_client.get_run(reference_id).data.metrics.items()
                       if key.startswith("summary/")}
    assert [step for step, _ in history(client, run.info.run_id, names.TRAIN_TOTAL_LOSS)] == list(range(5, ITERATIONS + 1, 5))


def test_kills_of_runner_and_worker_at_random_moments_leave_the_curve_of_an_uninterrupted_run(reference, tmp_path):
    chance = random.Random(12)
    kills = []
    for attempt in range(4):
        runner = start_run(tmp_path)
        wait_for(lambda: the_worker(tmp_path) is not None or runner.poll() is not None, what="a worker")
        time.sleep(chance.uniform(2.0, 8.0))
        victim = chance.choice(["runner", "worker"])
        worker = the_worker(tmp_path)
        if worker is None:  # already done
            break
        if victim == "runner":
            runner.send_signal(signal.SIGKILL)  # the worker trains on as an orphan
        else:
            worker.send_signal(signal.SIGKILL)
        kills.append(victim)
        runner.wait(timeout=120)
        runner.stdout.close()
        runner.stderr.close()
    finished = bench_run(tmp_path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    client = store_client(tmp_path)
    (run,) = child_runs(client)
    assert run.info.status == "FINISHED", kills
    assert run.data.metrics["summary/iterations"] == ITERATIONS
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)
    assert kills, "no fault was injected"


def test_the_same_command_after_the_runner_died_follows_the_orphaned_worker_and_exits_0(reference, tmp_path):
    runner = start_run(tmp_path)
    wait_for(lambda: the_worker(tmp_path) is not None, what="a worker")
    time.sleep(3)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=60)
    assert the_worker(tmp_path) is not None, "the worker should train on after its runner died"
    again = bench_run(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "attached to its running worker" in again.stderr
    assert "FINISHED" in again.stderr
    client = store_client(tmp_path)
    (run,) = child_runs(client)
    assert run.info.status == "FINISHED"
    log = (tmp_path / tracking.DEFAULT_EXPERIMENT / run.data.tags["run_key"] / run.info.run_id / "worker.log").read_text()
    assert log.count("--- worker ended FINISHED") == 1 and log.count("starting") == 1  # one worker did it all
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)


def test_two_runners_on_overlapping_grids_make_each_run_once(tmp_path):
    first = subprocess.Popen(run_arguments(tmp_path, "40", "0,1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENVIRONMENT)
    second = subprocess.Popen(run_arguments(tmp_path, "40,250", "1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENVIRONMENT)
    outputs = [process.communicate(timeout=900) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    client = store_client(tmp_path)
    experiment = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    everything = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    parents = [run for run in everything if run.data.tags.get(tracking.ROLE_TAG) == tracking.PARENT]
    children = [run for run in everything if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD]
    assert sorted(run.data.tags["labels"] for run in parents) == ["250", "40"]
    assert sorted((run.data.tags["labels"], run.data.tags["seed"]) for run in children) == [
        ("250", "1"), ("40", "0"), ("40", "1")]
    assert {run.info.status for run in children} == {"FINISHED"}
    assert {run.info.status for run in parents} == {"FINISHED"}
    for run in children:
        log = tmp_path / tracking.DEFAULT_EXPERIMENT / run.data.tags["run_key"] / run.info.run_id / "worker.log"
        assert log.read_text().count("--- worker ended FINISHED") == 1, run.info.run_name


def test_a_store_swapped_under_a_kept_output_dir_trains_afresh_and_adopts_nothing(reference, reference_dir, tmp_path):
    # The reference's output dir holds a finished run with its checkpoint; another store is pointed at it.
    other_uri = f"sqlite:///{tmp_path / 'other.db'}"
    swapped = bench_run(reference_dir, "--tracking-uri", other_uri)
    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
    assert "already finished" not in swapped.stdout
    client = store_client(tmp_path, other_uri)
    (run,) = child_runs(client)
    assert run.info.status == "FINISHED" and run.data.metrics["summary/iterations"] == ITERATIONS
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)


def test_a_torn_checkpoint_is_one_sentence_and_removing_its_folder_restarts_the_run_in_a_new_mlflow_run(reference, tmp_path):
    runner = start_run(tmp_path)
    checkpoints = lambda: list(tmp_path.glob(f"{tracking.DEFAULT_EXPERIMENT}/*/*/checkpoint.pt"))  # noqa: E731
    wait_for(lambda: checkpoints() or runner.poll() is not None, what="the first checkpoint")
    assert runner.poll() is None, "the run ended before its first checkpoint"
    the_worker(tmp_path).send_signal(signal.SIGKILL)
    runner.communicate(timeout=120)
    (checkpoint,) = checkpoints()
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # torn

    refused = bench_run(tmp_path)
    assert refused.returncode == 1
    assert f"The checkpoint {checkpoint} cannot be read" in refused.stderr + refused.stdout
    assert f"delete the folder {checkpoint.parent}" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
    client = store_client(tmp_path)
    (torn_run,) = child_runs(client)
    assert torn_run.info.status == "FAILED"

    import shutil

    shutil.rmtree(checkpoint.parent)
    restarted = bench_run(tmp_path)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "moved to MLflow's trash" in restarted.stderr
    (run,) = child_runs(client)
    assert run.info.run_id != torn_run.info.run_id and run.info.status == "FINISHED"
    assert client.get_run(torn_run.info.run_id).info.lifecycle_stage == "deleted"
    assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENVIRONMENT, start_new_session=True)
    store = tracking.TrackingStore(f"http://127.0.0.1:{port}", artifact_root=None, embedded=False)

    def answers() -> bool:
        try:
            tracking.check_reachable(store, timeout_seconds=1)
        except tracking.TrackingError:
            assert server.poll() is None, "mlflow server ended"
            return False
        return True

    wait_for(answers, timeout=120, what="mlflow server")
    return server


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def test_a_tracking_server_gone_for_a_while_mid_run_loses_nothing(reference, tmp_path):
    port = free_port()
    server = start_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    runner = start_run(tmp_path / "runs", "--tracking-uri", uri)
    progress = lambda: list((tmp_path / "runs").glob(f"{tracking.DEFAULT_EXPERIMENT}/*/*/progress.json"))  # noqa: E731
    try:
        wait_for(lambda: progress() or runner.poll() is not None, what="training to start")
        stop_server(server)
        time.sleep(4)  # the run trains on; what it logs waits in its journal
        assert runner.poll() is None, "the run should not have ended while the server was away"
        server = start_server(tmp_path, port)
        stdout, stderr = runner.communicate(timeout=600)
        assert runner.returncode == 0, stdout + stderr
        client = MlflowClient(uri)
        (run,) = child_runs(client)
        assert run.info.status == "FINISHED"
        assert_curve_of_an_uninterrupted_run(client, run.info.run_id, *reference)
    finally:
        if runner.poll() is None:
            runner.kill()
        stop_server(server)


def test_ctrl_c_stops_the_grid_cleanly_and_the_same_command_finishes_it(tmp_path):
    runner = subprocess.Popen(run_arguments(tmp_path, "40", "0,1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENVIRONMENT)
    wait_for(lambda: the_worker(tmp_path) is not None, what="a worker")
    time.sleep(2)
    runner.send_signal(signal.SIGINT)
    stdout, stderr = runner.communicate(timeout=180)
    assert runner.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    summary = {line.split("  ")[0]: line for line in stdout.splitlines() if line.startswith("own · ")}
    assert "KILLED" in summary["own · labels=40 · seed=0"]
    assert "NOT STARTED" in summary["own · labels=40 · seed=1"]
    assert the_worker(tmp_path) is None  # stopped, not orphaned
    finished = bench_run(tmp_path, seeds="0,1")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert {run.info.status for run in child_runs(store_client(tmp_path))} == {"FINISHED"}
