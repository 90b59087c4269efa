"""benchmarks/gpu_check.py in its CPU smoke mode, as on a bare CUDA image: without MLflow, gitpython or submitit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures_data import REPO_ROOT, SUBSET_DIR

ABSENT_ON_A_BARE_CUDA_IMAGE = ("mlflow", "git", "submitit")


@pytest.mark.slow
def test_the_gpu_check_runs_every_section_without_mlflow_gitpython_or_submitit(tmp_path):
    for name in ABSENT_ON_A_BARE_CUDA_IMAGE:  # importing any of them fails, as where they are not installed
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    finished = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--data-dir", str(SUBSET_DIR)],
                              cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=600)
    output = finished.stdout
    assert finished.returncode == 0, output + finished.stderr
    for number, title in enumerate(["machine", "own, paper shape", "TorchSSL, paper shape, through the adapter",
                                    "own resume", "own accuracy", "GPU-only tests"], start=1):
        assert f"== {number}. {title}" in output
    assert "host syncs per step" in output and "torchssl: " in output and " it/s " in output
    assert "at the pin by its HEAD file (no gitpython here" in output  # the checkout read without gitpython
    assert "losses at iterations 5-8 differ from the uninterrupted run's by at most" in output and ": ok" in output
    assert output.rstrip().splitlines()[-1].startswith("gpu_check passed in ")
