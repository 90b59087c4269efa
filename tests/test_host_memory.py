"""Run processes keep freed memory in malloc's heap: a training step's large tensors are not faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from harness.runner import KEEP_FREED_MEMORY_TUNABLES, with_kept_freed_memory

# Training steps of a small convolutional network whose activations (32 MiB each at batch 256) are above
# glibc's mmap limit; prints the page faults of the last step, after the heap has settled.
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
                            text=True, check=True, timeout=120).stdout
    return int(output.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is a glibc malloc tunable")
def test_a_run_process_reuses_freed_memory_instead_of_faulting_it_in_again():
    plain = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    default_faults = page_faults_of_a_settled_step(plain)
    kept_faults = page_faults_of_a_settled_step(with_kept_freed_memory(plain))
    assert default_faults > 50_000  # measured: 164,000 (four 32 MiB activations and their gradients, 4 KiB pages)
    assert kept_faults < default_faults / 100  # measured: 0


def test_a_users_own_malloc_tunables_win_and_other_tunables_are_kept():
    mine = {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=8"}
    assert with_kept_freed_memory(mine) == mine
    other = with_kept_freed_memory({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    assert other["GLIBC_TUNABLES"] == f"glibc.cpu.hwcaps=-AVX2:{KEEP_FREED_MEMORY_TUNABLES}"
    assert with_kept_freed_memory({})["GLIBC_TUNABLES"] == KEEP_FREED_MEMORY_TUNABLES
