"""How workers are started: which GPU each gets, and the environment every worker (local or Slurm) starts with."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from harness.launch import KEEP_FREED_MEMORY_TUNABLES, GpuChoiceError, GpuSlots, grid_gpus, worker_environment
from implementations.common import PROJECT_ROOT
from harness.console import _gpu_words


def test_workers_get_the_gpus_the_parent_was_given_not_the_first_ones_of_the_machine():
    assert grid_gpus(2, {"CUDA_VISIBLE_DEVICES": "4,5"}) == ("4", "5")
    mig = "MIG-5c3d7f0a-1b2c-4d5e-8f90-123456789abc,MIG-6d4e8a1b-2c3d-4e5f-9a01-23456789abcd"
    assert grid_gpus(2, {"CUDA_VISIBLE_DEVICES": mig}) == tuple(mig.split(","))
    assert grid_gpus(3, {}) == ("0", "1", "2")
    # CUDA stops at the first entry it cannot use: only the ones this process sees are handed on
    assert grid_gpus(1, {"CUDA_VISIBLE_DEVICES": "7,nonsense"}) == ("7",)


def test_gpus_chosen_by_their_cuda_numbers_in_this_shell_name_the_parents_entries():
    assert grid_gpus(4, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, chosen=(2, 3)) == ("6", "7")
    assert grid_gpus(4, {}, chosen=(3,)) == ("3",)
    with pytest.raises(GpuChoiceError, match=r"^--gpus 2 is not a GPU this process sees \(cuda:0 to cuda:1, "
                                             r"CUDA_VISIBLE_DEVICES=4,5\)\.$"):
        grid_gpus(2, {"CUDA_VISIBLE_DEVICES": "4,5"}, chosen=(0, 2))


def test_more_runs_at_a_time_than_gpus_share_them_round_robin_and_a_freed_gpu_is_taken_next():
    slots = GpuSlots(("4", "5"))
    assert [slots.take() for _ in range(3)] == ["4", "5", "4"]
    slots.give_back("5")
    assert slots.take() == "5"
    slots.give_back("4")
    assert slots.take() == "4"
    assert GpuSlots(()).take() is None  # CPU runs get no CUDA_VISIBLE_DEVICES


def test_the_grid_header_says_when_runs_share_gpus():
    assert _gpu_words(SimpleNamespace(gpu_ids=("4", "5"), max_parallel=2)) == " on GPU 4, 5 (one run per GPU)"
    assert "share them round-robin" in _gpu_words(SimpleNamespace(gpu_ids=("4", "5"), max_parallel=3))
    assert _gpu_words(SimpleNamespace(gpu_ids=(), max_parallel=1)) == " on the CPU"


def test_a_worker_environment_has_its_one_gpu_the_project_and_the_malloc_setting():
    parent = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "4,5", "PYTHONPATH": "/elsewhere"}
    environment = worker_environment(parent, gpu="5")
    assert environment["CUDA_VISIBLE_DEVICES"] == "5"
    assert environment["PYTHONPATH"] == os.pathsep.join([str(PROJECT_ROOT), "/elsewhere"])
    assert environment["GLIBC_TUNABLES"] == KEEP_FREED_MEMORY_TUNABLES
    assert worker_environment(parent, threads=1)["OMP_NUM_THREADS"] == "1"
    assert worker_environment({**parent, "OMP_NUM_THREADS": "3"}, threads=1)["OMP_NUM_THREADS"] == "3"  # the user's
    assert parent == {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "4,5", "PYTHONPATH": "/elsewhere"}  # untouched
