"""The duration estimate's step timing, in a short-lived process of its own: `python -m harness.estimate` reads
{impl, config, data_dir, labeled_indices} as JSON on stdin and prints the seconds of one training iteration.

In a child, so that its CUDA context and cached GPU memory are gone before the grid starts (in the runner they
would stay on the GPU for the whole grid), and started with a worker's environment (launch.py), on the GPU the
first worker gets, so that it times what a run will run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np

from harness.launch import worker_environment
from implementations.interface import TrainConfig


def timed_step_seconds(impl: str, config: TrainConfig, data_dir: Path | str, labeled_indices, gpu: str | None
                       ) -> float:
    """The seconds of one training iteration of implementation `impl` (its own estimate) on `gpu` (None: the CPU)."""
    request = {"impl": impl, "config": config.as_params(), "data_dir": str(data_dir),
               "labeled_indices": np.asarray(labeled_indices).tolist()}
    finished = subprocess.run([sys.executable, "-m", "harness.estimate"], input=json.dumps(request), text=True,
                              capture_output=True, env=worker_environment(os.environ, gpu=gpu))
    if finished.returncode != 0:
        lines = finished.stderr.strip().splitlines() or [f"exit code {finished.returncode}"]
        raise click.ClickException(f"Timing a training step for the duration estimate failed ({lines[-1]}); "
                                   "pass --yes to start without the estimate.")
    return float(json.loads(finished.stdout.strip().splitlines()[-1])["seconds"])


def main() -> int:
    from harness.data import load_cifar10
    from implementations import implementation

    request = json.load(sys.stdin)
    config = TrainConfig(**request["config"])
    data = load_cifar10(request["data_dir"])
    seconds = implementation(request["impl"]).seconds_per_iteration(
        config, data, np.asarray(request["labeled_indices"], dtype=np.int64))
    print(json.dumps({"seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
