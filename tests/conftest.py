"""Session set-up shared by every test module.

The TorchSSL reference: when ../shared/mirrors/TorchSSL.bundle is beside the project (here and in CI),
the pinned checkout is synced from it once, before any test runs, so that no TorchSSL test is skipped for
want of it. A failed sync fails the session; without the bundle, an existing checkout is used, and the
TorchSSL tests skip with the reason only when there is neither.

On a GPU machine the suite hides the GPUs (CUDA_VISIBLE_DEVICES="") unless SSL_BENCH_GPU_TESTS=1, which is how
the GPU tests are run (benchmarks/gpu_check.py).

The suite runs test files on two processes at once (pytest-xdist, `-n 2 --dist loadfile`): each then gets its
share of the cores for torch's threads, in its own process and in the `bench` processes it starts, unless
OMP_NUM_THREADS is set already.
"""

from __future__ import annotations

import os

import psutil
import pytest

from implementations.torchssl import checkout as vendor
from tests.fixtures_data import TORCHSSL_BUNDLE


def _share_the_cores_between_test_processes() -> None:
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))


_share_the_cores_between_test_processes()  # before anything imports torch

# The suite checks what a CPU run computes, on any machine: on a GPU machine it hides the GPUs from itself and from
# every process it starts, so that no assertion depends on what hardware the suite happens to find. The GPU tests
# (tests/test_gpu.py and the CUDA cases elsewhere) run with SSL_BENCH_GPU_TESTS=1, as benchmarks/gpu_check.py runs
# them; they skip where no GPU is visible.
GPU_TESTS_VARIABLE = "SSL_BENCH_GPU_TESTS"
if os.environ.get(GPU_TESTS_VARIABLE) != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_sessionstart(session: pytest.Session) -> None:
    if not TORCHSSL_BUNDLE.exists():
        return
    try:
        import git  # noqa: F401
    except ImportError:  # a machine without the project's dependencies (the GPU check's): no TorchSSL tests
        return
    try:
        vendor.verify_checkout()
    except vendor.VendorError:
        try:
            vendor.sync_checkout(str(TORCHSSL_BUNDLE))
        except vendor.VendorError as error:
            raise pytest.UsageError(f"The TorchSSL checkout cannot be synced from {TORCHSSL_BUNDLE}: {error}") from None


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of small batches: on a busy 2-core machine two intra-op threads wait for each other far longer
    than the work takes. Restored for the other test modules."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TRAINING_PROCESSES = ("harness.worker", "implementations.torchssl.child")


@pytest.fixture(scope="module", autouse=True)
def no_training_process_outlives_its_module(tmp_path_factory):
    """A test that fails while a worker trains could leave it training for the rest of the session, slowing every
    later test on a 2-core machine: any worker or TorchSSL child on this session's files is killed after each module."""
    yield
    session_folder = str(tmp_path_factory.getbasetemp())
    leftovers = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if any(module in command for module in TRAINING_PROCESSES) and any(session_folder in part for part in command):
            leftovers.append(process)
    for process in leftovers:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(leftovers, timeout=10)
