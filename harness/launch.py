"""How a run's worker process is started, the same for the local scheduler (scheduler.py) and for Slurm
jobs (slurm.py): its command, and its environment (the project importable, glibc's malloc keeping freed memory,
its one GPU or its share of the cores). Also which GPUs the workers of a grid get.

Imports neither torch nor MLflow: the benchmarks and the GPU check use it on machines without MLflow.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Mapping

from implementations.common import first_line, with_project_on_path

# glibc serves every allocation above 32 MiB with its own mmap and unmaps it on free, so a CPU training step
# faults all its activations in again (docs/performance.md has the measurement). With these two settings freed
# blocks stay in malloc's heap and the next step reuses them, as the CUDA caching allocator does on a GPU; the
# price is that a process keeps its peak memory.
KEEP_FREED_MEMORY_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"


def worker_command(spec_path: Path | str) -> list[str]:
    return [sys.executable, "-m", "harness.worker", str(spec_path)]


def worker_environment(base: Mapping[str, str], gpu: str | None = None, threads: int | None = None) -> dict[str, str]:
    """The environment a worker starts with: `base` (the parent's) with the project on PYTHONPATH, glibc told to
    keep freed memory, and, when given, its one GPU (CUDA_VISIBLE_DEVICES, as the parent names it: an index, a
    UUID or a MIG id) and its number of CPU threads (runs sharing the cores). The TorchSSL child of a worker
    inherits it, and so sees exactly the worker's GPU."""
    environment = with_project_on_path(with_kept_freed_memory(dict(base)))
    if gpu is not None:
        environment["CUDA_VISIBLE_DEVICES"] = gpu
    if threads is not None and "OMP_NUM_THREADS" not in environment:
        environment["OMP_NUM_THREADS"] = str(threads)
    return environment


def with_kept_freed_memory(environment: dict[str, str]) -> dict[str, str]:
    """A run process's environment with glibc's malloc keeping freed memory (see above). Given to every
    run, own and TorchSSL alike; ignored where the C library is not glibc. A user's own malloc tunables win."""
    tunables = environment.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." not in tunables:
        environment = {**environment, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, KEEP_FREED_MEMORY_TUNABLES]))}
    return environment


class GpuChoiceError(ValueError):
    """`--gpus` names a GPU this process does not see; the message is one sentence."""


def grid_gpus(visible_count: int, parent_environment: Mapping[str, str], chosen: tuple[int, ...] | None = None
              ) -> tuple[str, ...]:
    """The GPUs a grid's workers run on, each as CUDA_VISIBLE_DEVICES will name it for its worker.

    `visible_count` is how many GPUs this process sees (cuda:0 … cuda:N-1). When the parent has
    CUDA_VISIBLE_DEVICES set, cuda:i is its i-th entry (an index, a UUID or a MIG id), which is what the worker
    is given; else cuda:i is physical GPU i. `chosen` (`--gpus`) picks among them by those same numbers."""
    listed = [entry.strip() for entry in parent_environment.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    names = listed[:visible_count] if "CUDA_VISIBLE_DEVICES" in parent_environment else \
        [str(index) for index in range(visible_count)]
    if chosen is None:
        return tuple(names)
    for index in chosen:
        if not 0 <= index < len(names):
            seen = f"cuda:0 to cuda:{len(names) - 1}" if names else "no GPU"
            raise GpuChoiceError(f"--gpus {index} is not a GPU this process sees ({seen}"
                                 + (f", CUDA_VISIBLE_DEVICES={parent_environment['CUDA_VISIBLE_DEVICES']}"
                                    if listed else "") + ").")
    return tuple(names[index] for index in chosen)


class GpuSlots:
    """Hands each starting worker the GPU with the fewest workers on it (the earliest listed on a tie): one run
    per GPU while there are as many GPUs as runs at a time, round-robin beyond that."""

    def __init__(self, gpus: tuple[str, ...]):
        self.gpus = gpus
        self.in_use: Counter[str] = Counter()

    def take(self) -> str | None:
        if not self.gpus:
            return None
        gpu = min(self.gpus, key=lambda name: (self.in_use[name], self.gpus.index(name)))
        self.in_use[gpu] += 1
        return gpu

    def give_back(self, gpu: str | None) -> None:
        if gpu is not None and self.in_use[gpu] > 0:
            self.in_use[gpu] -= 1


def why_no_gpu() -> str | None:
    """None when PyTorch sees a CUDA GPU here; else one clause saying why not, naming torch's version and build."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    try:
        torch.cuda.init()  # raises the driver's reason: none installed, or too old for this build's CUDA runtime
        reason = "no CUDA device is visible"
    except Exception as error:  # torch raises RuntimeError, or AssertionError from older builds
        reason = first_line(error).rstrip(".")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        reason += f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})"
    return f"PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU: {reason}"


def visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
