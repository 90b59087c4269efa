"""Benchmark 1: training iterations/s and peak memory, own vs TorchSSL, side by side in one run.

Both implementations train through the same interface on the same real CIFAR-10 images,
split (40 labels, seed 0) and batch shape; each runs in a fresh process so that its peak
resident memory (RSS) is its own. Seconds per iteration are the median over log windows after
the first (warm-up) window, excluding evaluation and checkpointing in both implementations.

    python benchmarks/train_throughput.py [--shape paper|cpu|smoke] [--iterations N]

TorchSSL is skipped, with a message, when its checkout (`bench vendor sync`) is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import KeepingSink, peak_rss_mib, subset_run_inputs

from harness.presets import resolve_preset
from harness.vendor import VendorError, verify_checkout
from implementations import interface as names
from implementations import load_implementation

DEFAULT_ITERATIONS = {"paper": 5, "cpu": 40, "smoke": 60}


def measure_one(implementation: str, shape: str, iterations: int) -> dict:
    """Runs in its own process: train `iterations` iterations, report s/it and peak RSS."""
    log_interval = 1 if iterations <= 8 else max(1, iterations // 5)
    config = resolve_preset(shape, iterations=iterations, log_interval=log_interval,
                            eval_interval=10**9, checkpoint_interval=10**9)
    sink = KeepingSink()
    with tempfile.TemporaryDirectory() as work_dir:
        load_implementation(implementation).train(subset_run_inputs(config, Path(work_dir)), sink)
    windows = sink.metrics[names.TRAIN_ITERATIONS_PER_SECOND]
    rates = [rate for step, rate in sorted(windows.items())][1:] or list(windows.values())
    waits = [wait for step, wait in sorted(sink.metrics[names.TRAIN_DATA_WAIT_SECONDS].items())][1:]
    return {"seconds_per_iteration": statistics.median(1 / rate for rate in rates),
            "data_wait_seconds": statistics.median(waits) if waits else float("nan"),
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["paper", "cpu", "smoke"], default="paper")
    parser.add_argument("--iterations", type=int, default=None)
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
    results = {}
    for implementation in implementations:
        output = subprocess.run(
            [sys.executable, __file__, "--one", implementation, "--shape", arguments.shape,
             "--iterations", str(iterations)],
            check=True, capture_output=True, text=True,
        ).stdout
        results[implementation] = json.loads(output.strip().splitlines()[-1])
        r = results[implementation]
        print(f"{implementation:9s} {r['seconds_per_iteration']:8.3f} s/it  "
              f"({1 / r['seconds_per_iteration']:6.3f} it/s, data wait {r['data_wait_seconds']:.3f} s/it, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB)", flush=True)

    if "torchssl" in results:
        own, reference = results["own"], results["torchssl"]
        ratio = reference["seconds_per_iteration"] / own["seconds_per_iteration"]
        print(f"training speed ({arguments.shape} shape): own {1 / own['seconds_per_iteration']:.3f} it/s vs "
              f"torchssl {1 / reference['seconds_per_iteration']:.3f} it/s -> ratio {ratio:.2f}x; "
              f"peak RSS own {own['peak_rss_mib']:.0f} MiB vs torchssl {reference['peak_rss_mib']:.0f} MiB")
    else:
        print(f"training speed ({arguments.shape} shape): own {1 / results['own']['seconds_per_iteration']:.3f} it/s "
              "-> ratio n/a (TorchSSL checkout absent)")


if __name__ == "__main__":
    main()
