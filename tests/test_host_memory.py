"""Run processes keep freed memory in malloc's heap (the environment `bench run` gives each run process).

What the setting saves is a property of the kernel and glibc under the machine's load, so it is measured
by benchmarks/host_memory.py, not asserted here.
"""

from __future__ import annotations

from harness.runner import KEEP_FREED_MEMORY_TUNABLES, with_kept_freed_memory


def test_a_run_process_gets_the_kept_freed_memory_tunables():
    assert with_kept_freed_memory({"PATH": "/usr/bin"}) == {"PATH": "/usr/bin", "GLIBC_TUNABLES": KEEP_FREED_MEMORY_TUNABLES}
    assert "glibc.malloc.mmap_max=0" in KEEP_FREED_MEMORY_TUNABLES.split(":")


def test_a_users_own_malloc_tunables_win_and_the_missing_ones_are_added():
    both = {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=8:glibc.malloc.trim_threshold=4096"}
    assert with_kept_freed_memory(both) == both
    one = with_kept_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=8"})["GLIBC_TUNABLES"].split(":")
    assert one[0] == "glibc.malloc.mmap_max=8" and "glibc.malloc.mmap_max=0" not in one
    assert [item for item in one if item.startswith("glibc.malloc.trim_threshold=")] == \
        [item for item in KEEP_FREED_MEMORY_TUNABLES.split(":") if item.startswith("glibc.malloc.trim_threshold=")]
    other = with_kept_freed_memory({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    assert other["GLIBC_TUNABLES"] == f"glibc.cpu.hwcaps=-AVX2:{KEEP_FREED_MEMORY_TUNABLES}"
