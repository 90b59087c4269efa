"""Let CUDA-only code run on the CPU: the `torch.cuda` calls TorchSSL's FixMatch makes become CPU no-ops.

TorchSSL refuses to start without a GPU (its `main_worker` stops with an "only GPU training" error) and
moves everything with `.cuda(gpu)`. On a machine without one, the adapter's child process calls
`pretend_cuda_on_cpu()` before it imports TorchSSL. What TorchSSL's FixMatch path touches, and what it
gets here (commit f26e1d4; fixmatch.py, models/fixmatch/fixmatch.py):

- `torch.cuda.is_available()` → True, `device_count()` → 1, `current_device()` → 0,
  `set_device(i)` and `synchronize()` → nothing;
- `Tensor.cuda(...)` and `Module.cuda(...)` → the same CPU tensor / module, unmoved;
- `torch.cuda.Event(enable_timing=True)` → an event that records the wall clock, so its
  prefetch/run timings stay meaningful;
- `torch.cuda.amp.GradScaler` → a disabled CPU scaler (TorchSSL builds one even with `amp: False`;
  the CUDA one would start managing CUDA state once `is_available()` says True).

Only for the process that calls it, and never where a GPU exists: `pretend_cuda_on_cpu` refuses then.
"""

from __future__ import annotations

import time

import torch


class WallClockEvent:
    """`torch.cuda.Event` on the CPU: `record()` notes the time, `elapsed_time` is in milliseconds."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.recorded_at: float | None = None

    def record(self, stream=None) -> None:
        self.recorded_at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def wait(self, stream=None) -> None:
        pass

    def elapsed_time(self, end_event: "WallClockEvent") -> float:
        if self.recorded_at is None or end_event.recorded_at is None:
            raise RuntimeError("both events must be recorded before elapsed_time")
        return (end_event.recorded_at - self.recorded_at) * 1000.0


def _stay_on_cpu(self, device=None, non_blocking: bool = False, memory_format=torch.preserve_format):
    return self


def _module_stays_on_cpu(self, device=None):
    return self


def _disabled_grad_scaler(*args, **kwargs) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", enabled=False)


def pretend_cuda_on_cpu() -> None:
    """Install the CPU stand-ins listed in the module docstring (idempotent)."""
    if getattr(torch.cuda, "_ssl_bench_on_cpu", False):
        return
    if torch.cuda.is_available():
        raise RuntimeError("a GPU is present: run TorchSSL on it instead of pretending CUDA on the CPU")
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.current_device = lambda: 0
    torch.cuda.set_device = lambda device: None
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.Event = WallClockEvent
    torch.cuda.amp.GradScaler = _disabled_grad_scaler
    torch.Tensor.cuda = _stay_on_cpu
    torch.nn.Module.cuda = _module_stays_on_cpu
    torch.cuda._ssl_bench_on_cpu = True
