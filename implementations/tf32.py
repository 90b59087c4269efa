"""TF32 on NVIDIA GPUs since Ampere: PyTorch may run fp32 convolutions (cuDNN: on by default) and fp32 matrix
multiplies (off by default) in TF32, whose 10-bit mantissa is bf16-like. Training keeps PyTorch's defaults in
every implementation, so own-as-torchssl computes as TorchSSL does; own's evaluation runs in true fp32. What was
in force is recorded with every run (its `tf32_training` and `tf32_evaluation` tags) and shown in the report."""

from __future__ import annotations

import contextlib

import torch

NOT_CUDA = "none (not a CUDA device)"


def tf32_in_force(device: torch.device | str) -> str:
    if torch.device(device).type != "cuda":
        return NOT_CUDA
    matmul = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
    convolutions = "on" if torch.backends.cudnn.allow_tf32 else "off"
    return f"matmul {matmul}, cuDNN convolutions {convolutions}"


@contextlib.contextmanager
def true_fp32():
    """TF32 off for matrix multiplies and convolutions inside the block; the settings before it restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
