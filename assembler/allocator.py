"""The process's memory allocator: glibc malloc's thresholds fixed, for steady timings.
Imports nothing heavy: the `assembler` command calls it before anything else."""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def steady_allocator(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Fix glibc malloc's mmap and trim thresholds for this process (64 MiB and 256 MiB).

    By default glibc adapts them as the process runs: then a buffer of a few MiB is, depending
    on what was allocated before, either reused or mapped afresh and given back on every call,
    and a network at batch 256 pays for each of its pages again (page faults: 1.3 to 1.5 times
    the time, changing from one run to the next). With fixed thresholds, freed memory below
    them is reused. Does nothing (returns False) where the C library is not glibc or where the
    user set MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_. The `assembler` command, the
    demo and the benchmarks call it once at start; a library user may call it too (once, early)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded: no search, no subprocess
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
