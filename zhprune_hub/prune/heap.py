"""Give freed heap memory back to the system after every block, so peak memory does not creep up with depth.

glibc raises its mmap threshold (up to 32 MiB) every time a larger mmap-ed buffer is freed. After
the first block the engine's many 1-32 MiB temporaries (activation slices, gradients, per-head
matrices) therefore come from the heap, where freed space stays fragmented and resident: on a
LLaMA-7B-width model it held about 0.9 GB after pass 2 and grew the peak by about 95 MiB per
block. `malloc_trim` hands every free page of the heap back (not only its top), so trimming at
each block boundary keeps what one block left behind from adding to the next one's peak. Fixing
the mmap threshold at 1 MiB (the previous fix) did the same for memory but served every large
temporary by a fresh mmap: on SmolLM2 it took 340 s where the trim takes 262 s and neither 253 s
(BENCHMARKS.md, "Memory against depth").
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Return the heap's free pages to the system; False where the C library is not glibc (nothing to do)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
