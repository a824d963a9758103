"""The engine trims glibc's heap after every block so freed temporaries leave the process (prune/heap.py)."""

from __future__ import annotations

import platform

import pytest

from zhprune_hub.prune.heap import trim_heap

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="resident memory is read from /proc")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_freed_heap_fragments_are_returned() -> None:
    """Many small buffers, every other one kept: the freed half stays resident until trimmed."""
    if platform.libc_ver()[0] != "glibc":
        assert trim_heap() is False
        return
    trim_heap()
    buffers = [bytes([i % 251]) * (64 * 1024) for i in range(4096)]  # 256 MiB of written 64 KiB heap chunks
    kept = buffers[1::2]
    del buffers
    before = _resident_bytes()
    assert trim_heap() is True
    after = _resident_bytes()
    assert before - after > 64 * 2**20, (before, after)  # most of the freed 128 MiB went back
    del kept
