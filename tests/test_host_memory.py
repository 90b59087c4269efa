"""Run processes keep freed memory in malloc's heap (the environment `bench run` gives each run process).

What the setting saves is a property of the kernel and glibc under the machine's load, so it is measured
by benchmarks/host_memory.py, not asserted here.
"""

from __future__ import annotations

from harness.launch import KEEP_FREED_MEMORY_TUNABLES, with_kept_freed_memory


def test_a_run_process_gets_the_kept_freed_memory_tunables():
    assert with_kept_freed_memory({"PATH": "/usr/bin"}) == {"PATH": "/usr/bin", "GLIBC_TUNABLES": KEEP_FREED_MEMORY_TUNABLES}
    assert "glibc.malloc.mmap_max=0" in KEEP_FREED_MEMORY_TUNABLES.split(":")


def test_a_users_own_malloc_tunables_win_and_other_tunables_are_kept():
    mine = {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=8"}
    assert with_kept_freed_memory(mine) == mine
    other = with_kept_freed_memory({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    assert other["GLIBC_TUNABLES"] == f"glibc.cpu.hwcaps=-AVX2:{KEEP_FREED_MEMORY_TUNABLES}"
