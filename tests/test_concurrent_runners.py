"""Several `bench run` at once, and Ctrl-C: real runner and worker processes on a real sqlite store, the smoke
preset on real CIFAR-10 images.

- two runners at once on overlapping grids: one parent per (labels, preset), one child per run key, each
  FINISHED by exactly one worker;
- Ctrl-C stops the grid cleanly (the running run KILLED, the rest NOT STARTED, no orphan), and the same
  command finishes it.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from mlflow.entities import ViewType

from harness import tracking
from implementations.interface import DEFAULT_EXPERIMENT
from tests.bench_processes import (
    ENVIRONMENT,
    bench_run,
    child_runs,
    run_arguments,
    store_client,
    the_worker,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_two_runners_on_overlapping_grids_make_each_run_once(tmp_path):
    first = subprocess.Popen(run_arguments(tmp_path, "40", "0,1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENVIRONMENT)
    second = subprocess.Popen(run_arguments(tmp_path, "40,250", "1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENVIRONMENT)
    outputs = [process.communicate(timeout=900) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    client = store_client(tmp_path)
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    everything = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    parents = [run for run in everything if run.data.tags.get(tracking.ROLE_TAG) == tracking.PARENT]
    children = [run for run in everything if run.data.tags.get(tracking.ROLE_TAG) == tracking.CHILD]
    assert sorted(run.data.tags["labels"] for run in parents) == ["250", "40"]
    assert sorted((run.data.tags["labels"], run.data.tags["seed"]) for run in children) == [
        ("250", "1"), ("40", "0"), ("40", "1")]
    assert {run.info.status for run in children} == {"FINISHED"}
    assert {run.info.status for run in parents} == {"FINISHED"}
    for run in children:
        log = tmp_path / DEFAULT_EXPERIMENT / run.data.tags["run_key"] / run.info.run_id / "worker.log"
        assert log.read_text().count("--- worker ended FINISHED") == 1, run.info.run_name


def test_ctrl_c_stops_the_grid_cleanly_and_the_same_command_finishes_it(tmp_path):
    runner = subprocess.Popen(run_arguments(tmp_path, "40", "0,1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENVIRONMENT)
    wait_for(lambda: the_worker(tmp_path) is not None, what="a worker")
    time.sleep(2)
    runner.send_signal(signal.SIGINT)
    stdout, stderr = runner.communicate(timeout=180)
    assert runner.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    summary = {line.split("  ")[0]: line for line in stdout.splitlines() if line.startswith("fixmatch/own/")}
    assert "KILLED" in summary["fixmatch/own/40/s0"]
    assert "NOT STARTED" in summary["fixmatch/own/40/s1"]
    assert the_worker(tmp_path) is None  # stopped, not orphaned
    assert "stopped by Ctrl-C (SIGINT) at iteration" in stdout + stderr and "SIGTERM" not in stdout + stderr
    (killed,) = child_runs(store_client(tmp_path))
    assert killed.data.tags[tracking.ERROR_TAG].startswith("stopped by Ctrl-C (SIGINT) at iteration ")
    finished = bench_run(tmp_path, seeds="0,1")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert {run.info.status for run in child_runs(store_client(tmp_path))} == {"FINISHED"}
