"""Give large freed buffers back to the system, so the engine's peak memory does not creep up with depth.

glibc serves an allocation from the heap when it is below its mmap threshold, and raises that
threshold (up to 32 MiB) every time a larger mmap-ed buffer is freed. After the first block the
engine's many 1-32 MiB temporaries (activation slices, gradients, per-head matrices) therefore
come from the heap, where freed space stays fragmented and resident: on a LLaMA-7B-width model
it held about 0.9 GB after pass 2 and grew the peak by about 95 MiB per block. A fixed 1 MiB
threshold serves them by mmap, returned on free: the peak of a 4-block run fell from 3.68 to
3.22 GiB, and the heap left after pass 2 from 1.3 GB to 0.4 GB (BENCHMARKS.md, "Memory against
depth").
"""

from __future__ import annotations

import ctypes

#: glibc's mallopt parameter number for the mmap threshold.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 1 MiB; False where the C library is not glibc (nothing to do)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
