"""TorchSSL's side of `bench parity`, started from the parent: arguments, inputs, and the child process
(parity_child.py) that runs TorchSSL's own FixMatch iteration K times on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from implementations.common import with_project_on_path
from implementations.interface import ImageData, TrainConfig
from implementations.torchssl import checkout as torchssl_checkout
from implementations.torchssl.adapter import SPLIT_FILE
from implementations.torchssl.arguments import build_torchssl_args, read_reference_config


def trace(config: TrainConfig, data: ImageData, labeled_indices: np.ndarray, inputs: dict,
          initial_weights: list[torch.Tensor], work_dir: Path) -> dict:
    """TorchSSL's trace (the layout of implementations/own/parity.py) for the given fixed inputs, starting
    from `initial_weights` (own's state_dict order, which is TorchSSL's)."""
    checkout = torchssl_checkout.verify_checkout()
    work_dir = Path(work_dir).resolve()
    save_path = work_dir / "torchssl" / "parity"
    save_path.mkdir(parents=True, exist_ok=True)
    np.save(save_path / SPLIT_FILE, np.asarray(labeled_indices, dtype=np.int64))
    steps = len(inputs["steps"])
    args = build_torchssl_args(
        read_reference_config(checkout.path, "fixmatch", len(labeled_indices)), config.replace(iterations=steps),
        num_labels=len(labeled_indices), num_classes=data.num_classes, save_dir=save_path.parent,
        save_name=save_path.name, gpu=0, num_workers=0, load_path=None)
    args["num_eval_iter"] = steps + 1  # evaluates after the first iteration and at the end only

    arrays = {}
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        arrays[name] = str(work_dir / f"{name}.npy")
        np.save(arrays[name], getattr(data, name))
    torch.save(inputs, work_dir / "inputs.pt")
    torch.save([tensor.contiguous() for tensor in initial_weights], work_dir / "initial_weights.pt")
    spec = {"checkout": str(checkout.path), "torchssl_args": args, "arrays": arrays,
            "inputs": str(work_dir / "inputs.pt"), "initial_weights": str(work_dir / "initial_weights.pt"),
            "output": str(work_dir / "torchssl_trace.pt")}
    (work_dir / "parity_spec.json").write_text(json.dumps(spec, indent=2))
    environment = {**with_project_on_path(os.environ), "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run([sys.executable, "-m", "implementations.torchssl.parity_child",
                                str(work_dir / "parity_spec.json")], cwd=save_path.parent, env=environment,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"TorchSSL's side of the parity check failed (exit code {completed.returncode}):\n{tail}")
    return torch.load(work_dir / "torchssl_trace.pt")
