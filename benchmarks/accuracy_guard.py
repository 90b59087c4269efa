"""Benchmark 3: the fast path must not cost accuracy.

Trains own FixMatch twice per seed on the real CIFAR-10 images in ../shared, same split and
seed, equal iterations: once on the fast path (batched on-device augmentation, bf16 autocast,
channels_last: the paper preset's choice on a GPU, every speed setting that could change the numbers)
and once as the plain reference (per-image PIL augmentation, fp32).
Prints the EMA model's final top-1 of each and compares the difference of the means with the
spread between seeds.

    python benchmarks/accuracy_guard.py [--iterations 600] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import KeepingSink, subset_run_inputs

from harness.presets import resolve_preset
from implementations import interface
from implementations.own.trainer import OwnTrainer

VARIANTS = {
    "fast path": dict(augmentation="batched", precision="bf16", channels_last=True),
    "fp32 + per-image PIL": dict(augmentation="pil", precision="fp32", channels_last=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--labels", type=int, default=250)
    arguments = parser.parse_args()
    seeds = [int(s) for s in arguments.seeds.split(",")]

    top1: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for seed in seeds:
        for name, flags in VARIANTS.items():
            config = resolve_preset("cpu", iterations=arguments.iterations, seed=seed,
                                    eval_interval=arguments.iterations, checkpoint_interval=arguments.iterations,
                                    **flags)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as work_dir:
                result = OwnTrainer().train(subset_run_inputs(config, Path(work_dir), arguments.labels), KeepingSink())
            top1[name].append(result.final_metrics[interface.EVAL_TOP1] * 100)
            print(f"seed {seed}  {name:22s} top-1 {top1[name][-1]:6.2f} %  ({time.perf_counter() - started:5.0f} s)",
                  flush=True)

    fast, reference = (top1[name] for name in VARIANTS)
    spread = max(statistics.stdev(fast), statistics.stdev(reference)) if len(seeds) > 1 else float("nan")
    difference = statistics.mean(fast) - statistics.mean(reference)
    verdict = "no loss beyond seed noise" if difference >= -2 * spread else "LOSS beyond seed noise (> 2 seed std)"
    print(f"setting: cpu preset (WRN-16-1, B=32, mu=3), {arguments.iterations} iterations, "
          f"{arguments.labels} labels, seeds {seeds}, CIFAR-10 subset ({len(fast)} runs each)")
    print(f"accuracy guard: fast path {statistics.mean(fast):.2f} % vs fp32/PIL {statistics.mean(reference):.2f} % "
          f"(difference {difference:+.2f} points, seed std {spread:.2f}) -> ratio "
          f"{statistics.mean(fast) / statistics.mean(reference):.3f}, {verdict}")


if __name__ == "__main__":
    main()
