"""Benchmark: page faults of a settled training step, glibc's default malloc against the setting
`bench run` gives every run process (harness/launch.py, KEEP_FREED_MEMORY_TUNABLES).

A small convolutional network whose activations (32 MiB each at batch 256) are above glibc's mmap
threshold trains a few steps in a fresh process; the page faults of its last step are counted, once
with each environment, alternately `--repeats` times. The counts depend on the kernel, glibc and the
machine's load, which is why this is a benchmark and not a test.

    python benchmarks/host_memory.py [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys

import common  # noqa: F401  (puts the repository on sys.path)

from harness.launch import with_kept_freed_memory

TRAINING_STEPS = """
import resource, torch
from torch import nn
model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
images = torch.randn(256, 3, 32, 32)
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(images).square().mean().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_of_a_settled_step(environment: dict[str, str]) -> int:
    output = subprocess.run([sys.executable, "-c", TRAINING_STEPS], env=environment, capture_output=True,
                            text=True, check=True, timeout=300).stdout
    return int(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if platform.libc_ver()[0] != "glibc":
        raise SystemExit("the setting is a glibc malloc tunable; this C library is not glibc")
    plain = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    kept = with_kept_freed_memory(plain)
    default_faults, kept_faults = [], []
    for repeat in range(args.repeats):
        default_faults.append(page_faults_of_a_settled_step(plain))
        kept_faults.append(page_faults_of_a_settled_step(kept))
        print(f"repeat {repeat + 1}: default malloc {default_faults[-1]:,} page faults, "
              f"kept freed memory {kept_faults[-1]:,}", flush=True)
    print(f"median page faults of a settled step: default {statistics.median(default_faults):,.0f}, "
          f"kept freed memory {statistics.median(kept_faults):,.0f} ({kept['GLIBC_TUNABLES']})")


if __name__ == "__main__":
    main()
