"""The engine fixes glibc's mmap threshold so freed temporaries leave the process (prune/heap.py)."""

from __future__ import annotations

import platform

from zhprune_hub.prune.heap import return_large_buffers


def test_glibc_accepts_the_fixed_threshold_and_other_libcs_are_left_alone() -> None:
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert return_large_buffers() is on_glibc
