"""`bench run` as real processes for the fault tests: the command line, the store it writes, its worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from mlflow import MlflowClient
from mlflow.entities import ViewType

from harness import tracking
from implementations import interface
from implementations.interface import DEFAULT_EXPERIMENT
from tests.fixtures_data import SUBSET_DIR

ITERATIONS = 100  # smoke preset: evaluation and checkpoint every 20 iterations, training signals every 5
# One intra-op thread per process: several runners and workers share 2 cores here, and threads that wait for
# each other across processes would only slow every run down (the tiny smoke model gains nothing from two).
ENVIRONMENT = {**{key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"},
               "OMP_NUM_THREADS": "1"}
# Same value whenever the same iterations are computed the same way (not timings).
DETERMINISTIC_KEYS = (interface.TRAIN_SUPERVISED_LOSS, interface.TRAIN_UNSUPERVISED_LOSS, interface.TRAIN_TOTAL_LOSS,
                      interface.TRAIN_MASK_RATE, interface.TRAIN_LR)


def run_arguments(output_dir: Path, labels: str = "40", seeds: str = "0", *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", "--impl", "own", "--labels", labels, "--seeds", seeds,
            "--preset", "smoke", "--device", "cpu", "--iterations", str(ITERATIONS), "--data-dir", str(SUBSET_DIR),
            "--output-dir", str(output_dir), *extra]


def bench_run(output_dir: Path, *extra: str, labels: str = "40", seeds: str = "0", timeout: float = 600):
    return subprocess.run(run_arguments(output_dir, labels, seeds, *extra), capture_output=True, text=True,
                          env=ENVIRONMENT, timeout=timeout)


def start_run(output_dir: Path, *extra: str, code_dir: Path | None = None) -> subprocess.Popen:
    """`bench run` of this checkout, or of the project's files in `code_dir` (another version of the code)."""
    environment = ENVIRONMENT if code_dir is None else {**ENVIRONMENT, "PYTHONPATH": str(code_dir)}
    return subprocess.Popen(run_arguments(output_dir, "40", "0", *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, cwd=code_dir)


def store_client(output_dir: Path, uri: str | None = None) -> MlflowClient:
    return MlflowClient(uri or f"sqlite:///{output_dir / 'mlflow.db'}")


def child_runs(client: MlflowClient, view=ViewType.ACTIVE_ONLY):
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
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
