"""The GPU check: one command that says whether the main job is ready for a GPU, and how fast it is there.

    python benchmarks/gpu_check.py [--data-dir D] [--torchssl-dir T]     # on a GPU machine, about 5 minutes
    python benchmarks/gpu_check.py --cpu-smoke                           # tiny shapes on the CPU (CI runs it)

It needs what a bare CUDA image with PyTorch has (torch, torchvision, numpy, Pillow, scikit-learn, matplotlib,
pandas, psutil; no MLflow, no gitpython, no internet), the project on PYTHONPATH, the CIFAR-10 subset and a
TorchSSL checkout (`--prepare DIR` copies both into DIR, e.g. a git-ignored folder that travels with the checkout).
It prints, section by section:

1. torch, CUDA, driver and GPU;
2. own at the paper shape (WRN-28-2, 64 + 448 + 448): it/s eagerly, with the augmentation compiled, and with
   the model compiled too, host
   synchronisations per step (CUDA's sync debug mode, counted), peak GPU memory, GPU utilisation while stepping;
3. TorchSSL at the paper shape through the real adapter and its child process: it/s and its data wait;
4. own's resume: a checkpoint saved here, reloaded in a new process, the next steps' losses against an
   uninterrupted run;
5. a 2,000-iteration own run of the cpu preset on the subset (250 labels, seed 0) against its CPU number;
6. the GPU-only tests (they skip on a CPU).

With --cpu-smoke every section runs at tiny shapes on the CPU, so that the script cannot rot; its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from common import REPO_ROOT, SUBSET_DIR, KeepingSink, subset_run_inputs

from harness.launch import worker_environment
from harness.presets import resolve_preset
from implementations import interface
from implementations.interface import TrainConfig
from implementations.own.batches import TrainingBatches
from implementations.own.trainer import OwnTrainer, OwnTraining

# own, cpu preset, 250 labels, seed 0, 2,000 iterations on this project's 2-core CPU (README, ledger_gap table)
CPU_TOP1_AT_2000 = 0.3481
ACCURACY_TOLERANCE = 0.06  # seeds differ by about 2 points there; GPU arithmetic differs from the CPU's
RESUME_TOLERANCE = 1e-3  # absolute, on each logged loss (cuDNN's algorithms need not be deterministic)


def say(text: str = "") -> None:
    print(text, flush=True)


def environment(device: torch.device) -> None:
    say(f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}, Python {sys.version.split()[0]}")
    if device.type != "cuda":
        say("device: CPU (no GPU used)")
        return
    properties = torch.cuda.get_device_properties(device)
    driver = "unknown"
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # no NVML here: the driver's version stays unknown
        pass
    say(f"GPU: {properties.name}, {properties.total_memory / 2**30:.0f} GiB, compute capability "
        f"{properties.major}.{properties.minor}; driver {driver}; cuDNN {torch.backends.cudnn.version()}")


class Utilisation:
    """GPU utilisation sampled every 0.1 s while the block runs (NVML through torch; n/a without it)."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.running = device, [], False

    def __enter__(self):
        self.running = self.device.type == "cuda"
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # no pynvml
                return
            time.sleep(0.1)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def text(self) -> str:
        return f"{statistics.mean(self.samples):.0f} %" if self.samples else "n/a"


def own_speed(config: TrainConfig, data_dir: Path, steps: int, label: str) -> None:
    """Seconds per training step of own's loop (batches and augmentation included), measured after warm-up."""
    device = torch.device(interface.resolve_device(config.device))
    run = subset_run_inputs(config, Path(tempfile.mkdtemp()), data_dir=data_dir)
    torch.manual_seed(config.seed)
    training = OwnTraining(config, run.data.num_classes, len(run.data.train_images), device)
    batches = TrainingBatches(run.data, run.labeled_indices, config, device)
    for _ in range(3):  # allocations, cuDNN's algorithm search, compilation
        training.step(batches.next())
    synchronise(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught, Utilisation(device) as utilisation:
        warnings.simplefilter("always")
        started = time.perf_counter()
        for _ in range(steps):
            loss, _ = training.step(batches.next())
        synchronise(device)
        seconds = (time.perf_counter() - started) / steps
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(warning.message) for warning in caught)
    memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else "n/a"
    say(f"own {label}: {1 / seconds:.2f} it/s ({seconds * 1000:.1f} ms/step over {steps} steps), host syncs per "
        f"step {syncs / steps:.2f}, peak GPU memory {memory}, GPU utilisation {utilisation.text()}")


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torchssl_speed(config: TrainConfig, data_dir: Path, checkout_dir: Path, steps: int) -> None:
    """TorchSSL's FixMatch through the adapter and its child process, as a `bench run` trains it."""
    from implementations.torchssl.adapter import TorchSSLImplementation

    checkout = torchssl_checkout(checkout_dir)
    if checkout is None:
        return
    config = config.replace(iterations=steps, log_interval=max(1, steps // 4), eval_interval=10**9,
                            checkpoint_interval=10**9)
    sink = KeepingSink()
    with tempfile.TemporaryDirectory() as work_dir, output_to(Path(work_dir) / "torchssl.log") as log:
        try:
            TorchSSLImplementation(checkout).train(subset_run_inputs(config, Path(work_dir), data_dir=data_dir), sink)
        except Exception:
            say("torchssl: FAILED; the end of its output:\n" + "\n".join(log.read_text().splitlines()[-30:]))
            raise
    rates = [rate for _, rate in sorted(sink.metrics[interface.TRAIN_ITERATIONS_PER_SECOND].items())][1:]
    waits = [wait for _, wait in sorted(sink.metrics[interface.TRAIN_DATA_WAIT_SECONDS].items())][1:]
    say(f"torchssl: {statistics.median(rates):.2f} it/s (median of {len(rates)} log windows after the first), data "
        f"wait {statistics.median(waits) * 1000:.1f} ms/step")


@contextlib.contextmanager
def output_to(path: Path):
    """File descriptors 1 and 2 (TorchSSL's child writes there, a line per iteration) into `path` for the block."""
    sys.stdout.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield path
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def torchssl_checkout(checkout_dir: Path):
    from implementations.torchssl import checkout as vendor

    try:
        return vendor.verify_checkout(checkout_dir)
    except vendor.VendorError as error:
        say(f"torchssl: skipped ({error})")
        return None
    except ImportError:  # no gitpython here: the commit from the checkout's HEAD, its cleanliness unchecked
        commit = (checkout_dir / ".git" / "HEAD").read_text().strip()
        if commit != vendor.read_pin().commit:
            say(f"torchssl: skipped (the checkout {checkout_dir} is at {commit[:12]}, not the pin)")
            return None
        say(f"torchssl checkout {checkout_dir}: at the pin by its HEAD file (no gitpython here to check for changes)")
        return vendor.VendorInfo(path=checkout_dir, commit=commit, clean=False)


class StoppingSink(KeepingSink):
    """Keeps the numbers; raises once a log after `stop_after` arrives, like an interrupted run."""

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.stop_after = stop_after

    def log_metrics(self, metrics, step):
        if self.stop_after is not None and step > self.stop_after:
            raise KeyboardInterrupt("interrupted on purpose")
        super().log_metrics(metrics, step)


def resume_config(config: TrainConfig) -> TrainConfig:
    return config.replace(iterations=8, log_interval=1, eval_interval=4, checkpoint_interval=4)


def own_resume(config: TrainConfig, data_dir: Path) -> bool:
    """Checkpoint at iteration 4 here; a new process resumes it; its losses at 5..8 against an uninterrupted run."""
    config = resume_config(config)
    work = Path(tempfile.mkdtemp())
    uninterrupted = StoppingSink()
    OwnTrainer().train(subset_run_inputs(config, work / "uninterrupted", data_dir=data_dir), uninterrupted)
    try:
        OwnTrainer().train(subset_run_inputs(config, work / "resumed", data_dir=data_dir), StoppingSink(stop_after=4))
    except KeyboardInterrupt:
        pass
    finished = subprocess.run([sys.executable, __file__, "--resume-part", str(work / "resumed"), "--data-dir",
                               str(data_dir), "--config", json.dumps(config.as_params())],
                              capture_output=True, text=True, env=worker_environment(os.environ))
    if finished.returncode != 0:
        say(f"own resume: FAILED in the new process: {finished.stderr.strip().splitlines()[-1:]}")
        return False
    resumed = {int(step): loss for step, loss in json.loads(finished.stdout.strip().splitlines()[-1]).items()}
    expected = uninterrupted.metrics[interface.TRAIN_TOTAL_LOSS]
    largest = max(abs(resumed[step] - expected[step]) for step in range(5, 9))
    verdict = "ok" if sorted(resumed) == [5, 6, 7, 8] and largest <= RESUME_TOLERANCE else "FAILED"
    say(f"own resume on {interface.resolve_device(config.device)}: checkpoint of iteration 4 reloaded in a new process, "
        f"losses at iterations 5-8 differ from the uninterrupted run's by at most {largest:.2e} "
        f"(tolerance {RESUME_TOLERANCE:g}): {verdict}")
    return verdict == "ok"


def resume_part(work_dir: Path, data_dir: Path, config: dict) -> None:
    sink = StoppingSink()
    OwnTrainer().train(subset_run_inputs(TrainConfig(**config), work_dir, data_dir=data_dir), sink)
    print(json.dumps(sink.metrics[interface.TRAIN_TOTAL_LOSS]))


def accuracy_sanity(config: TrainConfig, data_dir: Path, compare: bool) -> bool:
    sink = KeepingSink()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work_dir:
        result = OwnTrainer().train(subset_run_inputs(config, Path(work_dir), num_labels=250, data_dir=data_dir), sink)
    top1 = result.final_metrics[interface.EVAL_TOP1]
    line = (f"own accuracy: cpu preset, 250 labels, seed 0, {config.iterations:,} iterations in "
            f"{time.perf_counter() - started:.0f} s: top-1 {100 * top1:.2f} %")
    if not compare:
        say(f"{line} (smoke: not compared)")
        return True
    close = abs(top1 - CPU_TOP1_AT_2000) <= ACCURACY_TOLERANCE
    say(f"{line} against {100 * CPU_TOP1_AT_2000:.2f} % on the CPU (within ±{100 * ACCURACY_TOLERANCE:.0f} points: "
        f"{'ok' if close else 'FAILED'})")
    return close


def gpu_tests(data_dir: Path) -> bool:
    finished = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py",
                               "tests/test_augment_batched.py", "-k", "cuda or gpu or synchronise"],
                              cwd=REPO_ROOT, capture_output=True, text=True,
                              env={**worker_environment(os.environ), "SSL_BENCH_SUBSET_DIR": str(data_dir.resolve()),
                                   "SSL_BENCH_GPU_TESTS": "1"})
    summary = (finished.stdout.strip().splitlines() or ["(no output)"])[-1]
    say(f"GPU-only tests: {summary}")
    if finished.returncode != 0:
        say(finished.stdout[-4000:] + finished.stderr[-2000:])
    return finished.returncode == 0


def prepare(folder: Path, data_dir: Path, checkout_dir: Path) -> None:
    """Copy the subset and the TorchSSL checkout (with its .git, for the commit) where the check will find them."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(data_dir, folder / "cifar10-subset", dirs_exist_ok=True)
    shutil.copytree(checkout_dir, folder / "TorchSSL", dirs_exist_ok=True, symlinks=True)
    say(f"copied {data_dir} and {checkout_dir} into {folder}; on the GPU machine: python benchmarks/gpu_check.py "
        f"--data-dir {folder / 'cifar10-subset'} --torchssl-dir {folder / 'TorchSSL'}")


def section(number: int, title: str) -> None:
    say(f"\n== {number}. {title}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU: checks that it runs")
    parser.add_argument("--data-dir", type=Path, default=SUBSET_DIR)
    parser.add_argument("--torchssl-dir", type=Path, default=REPO_ROOT / "vendor" / "TorchSSL")
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="copy the data and the checkout into DIR, then stop")
    parser.add_argument("--resume-part", type=Path, help=argparse.SUPPRESS)  # internal: the resumed process
    parser.add_argument("--config", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.prepare:
        prepare(arguments.prepare, arguments.data_dir, arguments.torchssl_dir)
        return 0
    if arguments.resume_part:
        resume_part(arguments.resume_part, arguments.data_dir, json.loads(arguments.config))
        return 0
    smoke = arguments.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        say("No GPU here: run with --cpu-smoke to check the script on the CPU.")
        return 2
    device = "cpu" if smoke else "cuda"
    started = time.perf_counter()
    ok = True

    section(1, "machine")
    environment(torch.device(device))
    section(2, "own, paper shape" + (" (smoke: WRN-10-1, 8 + 16 + 16)" if smoke else ""))
    paper = resolve_preset("smoke" if smoke else "paper", device=device)
    own_speed(paper, arguments.data_dir, 3 if smoke else 30, "eager")
    if smoke:
        say("own compiled: not run in the smoke (the compiler takes minutes on a CPU)")
    else:
        own_speed(paper.replace(compile_augmentation=True), arguments.data_dir, 30, "--compile-augmentation")
        own_speed(paper.replace(compile=True, compile_augmentation=True), arguments.data_dir, 30,
                  "--compile --compile-augmentation")
    section(3, "TorchSSL, paper shape, through the adapter")
    torchssl_speed(paper, arguments.data_dir, arguments.torchssl_dir, 8 if smoke else 40)
    section(4, "own resume")
    ok &= own_resume(resolve_preset("smoke" if smoke else "cpu", device=device), arguments.data_dir)
    section(5, "own accuracy")
    accuracy = resolve_preset("cpu", device=device, iterations=20 if smoke else 2000, eval_interval=20 if smoke else 250)
    ok &= accuracy_sanity(accuracy if not smoke else accuracy.replace(depth=10), arguments.data_dir, compare=not smoke)
    section(6, "GPU-only tests")
    ok &= gpu_tests(arguments.data_dir)
    say(f"\ngpu_check {'passed' if ok else 'FAILED'} in {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
