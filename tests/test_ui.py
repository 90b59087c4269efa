"""`bench ui`: the MLflow UI on the store `bench run` writes to, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest
import requests
from click.testing import CliRunner

from harness import tracking
from harness.cli import main
from implementations.interface import DEFAULT_EXPERIMENT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory) -> Path:
    """An embedded store laid out as `bench run` lays it out: a parent and two children, a metric each."""
    output_dir = tmp_path_factory.mktemp("ui") / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        store = tracking.resolve_store(output_dir)
    client = store.client()
    experiment_id = tracking.get_or_create_experiment(client, DEFAULT_EXPERIMENT, store.artifact_root)
    parent = tracking.find_or_create_parent_run(client, experiment_id, 40, "smoke")
    for impl in ("own", "torchssl"):
        run_id = tracking.create_child_run(client, experiment_id, parent, tracking.child_run_name(impl, 40, 0),
                                           {"impl": impl, "labels": 40, "seed": 0})
        client.log_metric(run_id, "eval/top1", 0.5, step=20)
        client.set_terminated(run_id, "FINISHED")
    return output_dir


@pytest.mark.slow
def test_bench_ui_serves_the_runs_over_its_rest_api_and_stops_on_ctrl_c(output_dir, tmp_path):
    port = free_port()
    with open(tmp_path / "server.log", "w") as server_log:
        environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
        ui = subprocess.Popen([sys.executable, "-m", "harness.cli", "ui", "--port", str(port),
                               "--output-dir", str(output_dir)], stdout=subprocess.PIPE, stderr=server_log, text=True,
                              env=environment)
    try:
        announced = ui.stdout.readline()
        link = re.match(rf"MLflow UI: (http://127\.0\.0\.1:{port}/#/experiments/(\d+)/runs\?(\S+))", announced)
        assert link, announced + (tmp_path / "server.log").read_text()
        base = f"http://127.0.0.1:{port}"
        experiments = requests.post(f"{base}/api/2.0/mlflow/experiments/search", json={"max_results": 10}, timeout=30)
        (experiment,) = [entry for entry in experiments.json()["experiments"]
                         if entry["name"] == DEFAULT_EXPERIMENT]
        assert link.group(2) == experiment["experiment_id"]
        # The UI opens on training runs (not MLflow 3's GenAI overview) ...
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
        # ... filtered so that every child run is listed, not folded under its parent, sorted by impl, labels, seed.
        view = dict(urllib.parse.parse_qsl(link.group(3)))
        assert view["orderByKey"] == "tags.`run_key`" and view["orderByAsc"] == "true"
        runs = requests.post(f"{base}/api/2.0/mlflow/runs/search", timeout=30, json={
            "experiment_ids": [experiment["experiment_id"]], "filter": view["searchFilter"]}).json()["runs"]
        assert sorted(run["info"]["run_name"] for run in runs) == ["fixmatch/own/40/s0", "fixmatch/torchssl/40/s0"]
        server_processes = psutil.Process(ui.pid).children(recursive=True)
        assert server_processes
    finally:
        ui.send_signal(signal.SIGINT)
        remaining_output, _ = ui.communicate(timeout=60)

    assert ui.returncode == 0
    assert "MLflow UI stopped." in remaining_output
    time.sleep(0.5)
    assert not [process for process in server_processes if process.is_running() and process.status() != "zombie"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_bench_ui_without_a_store_says_to_run_first(tmp_path):
    result = CliRunner().invoke(main, ["ui", "--output-dir", str(tmp_path / "nothing")], env={"MLFLOW_TRACKING_URI": None})
    assert result.exit_code == 1
    assert f"Error: There is no MLflow store at {tmp_path / 'nothing' / 'mlflow.db'}" in result.output


def test_bench_ui_on_a_busy_port_says_so(output_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["ui", "--port", str(port), "--output-dir", str(output_dir)],
                                    env={"MLFLOW_TRACKING_URI": None})
    assert result.exit_code == 1
    assert f"Error: Cannot listen on 127.0.0.1:{port} (" in result.output
    assert "pass another --port" in result.output
