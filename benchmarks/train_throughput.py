"""Benchmark 1: training iterations/s and peak memory, own vs TorchSSL, side by side in one run.

Both implementations train through the same interface on the same real CIFAR-10 images,
split (40 labels, seed 0) and batch shape; each runs in a fresh process so that its peak
resident memory (RSS) is its own, with the malloc setting `bench run` gives every run process
(harness/launch.py, KEEP_FREED_MEMORY_TUNABLES; `--default-malloc` measures without it).
Seconds per iteration are the median over log windows after the first (warm-up) window,
excluding evaluation and checkpointing in both implementations.

    python benchmarks/train_throughput.py [--shape paper|cpu|smoke] [--iterations N] [--repeats R]
                                          [--default-malloc]

A shared machine's speed drifts between minutes; with `--repeats R` the two are measured alternately
R times, and the ratio is that of the medians, printed with the range of the R side-by-side ratios.

TorchSSL is skipped, with a message, when its checkout (`bench vendor sync`) is absent.

It also prints the arithmetic floor of the shape on this machine: the FLOP of one iteration
(convolutions and classifier, forward and backward, counted by torch's FlopCounterMode) over the
best matrix-multiply rate measured here. No implementation of the same model and batch can run
faster than that floor, so it bounds the ratio any implementation can reach against TorchSSL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import KeepingSink, peak_rss_mib, subset_run_inputs

from harness.presets import resolve_preset
from harness.launch import with_kept_freed_memory
from implementations.torchssl.checkout import VendorError, verify_checkout
from implementations import interface
from implementations import implementation as registered
from implementations.interface import resolve_device
from implementations.own.wide_resnet import WideResNet

DEFAULT_ITERATIONS = {"paper": 5, "cpu": 40, "smoke": 60}


def measure_one(name: str, shape: str, iterations: int) -> dict:
    """Runs in its own process: train `iterations` iterations, report s/it and peak RSS."""
    log_interval = 1 if iterations <= 8 else max(1, iterations // 5)
    config = resolve_preset(shape, iterations=iterations, log_interval=log_interval,
                            eval_interval=10**9, checkpoint_interval=10**9)
    sink = KeepingSink()
    with tempfile.TemporaryDirectory() as work_dir:
        registered(name).train(subset_run_inputs(config, Path(work_dir)), sink)
    windows = sink.metrics[interface.TRAIN_ITERATIONS_PER_SECOND]
    rates = [rate for step, rate in sorted(windows.items())][1:] or list(windows.values())
    waits = [wait for step, wait in sorted(sink.metrics[interface.TRAIN_DATA_WAIT_SECONDS].items())][1:]
    return {"seconds_per_iteration": statistics.median(1 / rate for rate in rates),
            "data_wait_seconds": statistics.median(waits) if waits else float("nan"),
            "peak_rss_mib": peak_rss_mib()}


def flop_per_iteration(config) -> float:
    """Convolution and classifier FLOP of one training iteration, forward and backward.

    Counted on a small batch and scaled: the count is linear in the number of images."""
    model = WideResNet(10, config.depth, config.widen_factor)
    images_per_iteration = config.labeled_batch_size + 2 * config.unlabeled_batch_size
    counted_images = 8
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(counted_images, 3, 32, 32)).sum().backward()
    return counter.get_total_flops() * images_per_iteration / counted_images


def best_matmul_flop_per_second(device: torch.device, size: int = 2048, repeats: int = 8) -> dict[str, float]:
    """This machine's best measured square-matrix-multiply rate, per dtype."""
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        fastest = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            fastest = min(fastest, time.perf_counter() - started)
        rates[str(dtype).replace("torch.", "")] = 2 * size**3 / fastest
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["paper", "cpu", "smoke"], default="paper")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="measure own and TorchSSL alternately this many times")
    parser.add_argument("--default-malloc", action="store_true",
                        help="run both implementations with glibc's default malloc settings, not bench run's")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one implementation
    arguments = parser.parse_args()
    iterations = arguments.iterations or DEFAULT_ITERATIONS[arguments.shape]

    if arguments.one:
        print(json.dumps(measure_one(arguments.one, arguments.shape, iterations)))
        return

    implementations = ["own", "torchssl"]
    try:
        verify_checkout()
    except VendorError as error:
        print(f"TorchSSL skipped: {error}")
        implementations = ["own"]

    config = resolve_preset(arguments.shape)
    print(f"shape {arguments.shape}: WRN-{config.depth}-{config.widen_factor}, batch {config.labeled_batch_size}"
          f" + {config.unlabeled_batch_size} + {config.unlabeled_batch_size}, {iterations} iterations each")
    environment = dict(os.environ) if arguments.default_malloc else with_kept_freed_memory(dict(os.environ))
    print(f"malloc: GLIBC_TUNABLES={environment.get('GLIBC_TUNABLES', '(unset)')} for both")
    measured: dict[str, list[dict]] = {implementation: [] for implementation in implementations}
    for _ in range(arguments.repeats):
        for implementation in implementations:
            output = subprocess.run(
                [sys.executable, __file__, "--one", implementation, "--shape", arguments.shape,
                 "--iterations", str(iterations)],
                check=True, capture_output=True, text=True, env=environment,
            ).stdout
            measured[implementation].append(r := json.loads(output.strip().splitlines()[-1]))
            print(f"{implementation:9s} {r['seconds_per_iteration']:8.3f} s/it  "
                  f"({1 / r['seconds_per_iteration']:6.3f} it/s, data wait {r['data_wait_seconds']:.3f} s/it, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB)", flush=True)
    results = {implementation: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
               for implementation, runs in measured.items()}

    flop = flop_per_iteration(config)
    rates = best_matmul_flop_per_second(torch.device(resolve_device(config.device)))
    floor = flop / max(rates.values())
    print(f"arithmetic floor: {flop / 1e12:.3f} TFLOP per iteration; best matmul here "
          + ", ".join(f"{dtype} {rate / 1e9:.0f} GFLOP/s" for dtype, rate in rates.items())
          + f" -> no implementation below {floor:.3f} s/it"
          + (f", so at most {results['torchssl']['seconds_per_iteration'] / floor:.2f}x TorchSSL"
             if "torchssl" in results else ""))

    if "torchssl" in results:
        own, reference = results["own"], results["torchssl"]
        ratio = reference["seconds_per_iteration"] / own["seconds_per_iteration"]
        pairs = sorted(t["seconds_per_iteration"] / o["seconds_per_iteration"]
                       for o, t in zip(measured["own"], measured["torchssl"]))
        spread = f" (side-by-side ratios {pairs[0]:.2f}-{pairs[-1]:.2f}x)" if len(pairs) > 1 else ""
        print(f"training speed ({arguments.shape} shape): own {1 / own['seconds_per_iteration']:.3f} it/s vs "
              f"torchssl {1 / reference['seconds_per_iteration']:.3f} it/s -> ratio {ratio:.2f}x{spread}; "
              f"peak RSS own {own['peak_rss_mib']:.0f} MiB vs torchssl {reference['peak_rss_mib']:.0f} MiB")
    else:
        print(f"training speed ({arguments.shape} shape): own {1 / results['own']['seconds_per_iteration']:.3f} it/s "
              "-> ratio n/a (TorchSSL checkout absent)")


if __name__ == "__main__":
    main()
