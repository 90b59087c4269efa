"""Implementations join by name through the registry alone: the harness never asks which one it holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from implementations import PLUGINS_VARIABLE, comparisons, implementation, implementation_names
from tests.fixtures_data import SUBSET_DIR

TOY = "toy=tests.toy_implementation:NearestClassMean"


def bench(output_dir: Path, *arguments: str, plugins: str | None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", PLUGINS_VARIABLE)}
    if plugins:
        environment[PLUGINS_VARIABLE] = plugins
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--labels", "40", "--seeds", "0", "--preset",
                           "smoke", "--iterations", "4", "--device", "cpu", "--data-dir", str(SUBSET_DIR),
                           "--output-dir", str(output_dir), *arguments],
                          capture_output=True, text=True, timeout=600, env=environment)


def test_a_third_implementation_registered_by_name_runs_in_a_grid_without_harness_code(tmp_path):
    refused = bench(tmp_path / "refused", "--impl", "toy", "--algorithm", "supervised", plugins=None)
    assert refused.returncode == 2 and "Unknown implementation 'toy' in --impl" in refused.stderr

    ran = bench(tmp_path / "runs", "--impl", "toy", "--algorithm", "supervised", plugins=TOY)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = [run for run in client.search_runs([e.experiment_id for e in client.search_experiments()])
              if run.data.tags.get("impl") == "toy"]
    assert run.info.status == "FINISHED" and run.info.run_name == "supervised/toy/40/s0"
    assert run.data.tags["toy_version"] == "1"  # its provenance, asked of it
    assert set(run.data.params) == {"preset", "algorithm", "seed", "iterations", "labels"}  # the fields it reads
    assert 0.0 <= run.data.metrics["eval/top1"] <= 1.0
    sheet = json.loads(Path(client.download_artifacts(run.info.run_id, "method.json", str(tmp_path))).read_text())
    assert sheet["algorithm"] == "nearest class mean"


def test_the_built_in_implementations_answer_for_themselves():
    assert implementation_names()[:3] == ("own", "own-as-torchssl", "torchssl")
    assert comparisons() == (("own", "torchssl"), ("own", "own-as-torchssl"), ("own-as-torchssl", "torchssl"))
    assert "remixmatch" in implementation("torchssl").algorithms() and "remixmatch" not in implementation("own").algorithms()
    assert "randaugment_ops" not in implementation("torchssl").fields_read("fixmatch")  # own's knob, not TorchSSL's
