"""The process allocator setting (assembler.allocator): with glibc's thresholds fixed, a
40 MiB buffer freed and allocated again reuses its pages; with glibc's adaptive thresholds
(at most 32 MiB) it is mapped afresh, and every page faults, on every call."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from assembler.allocator import steady_allocator
applied = steady_allocator() if sys.argv[1] == "steady" else False
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(10 << 20)  # 40 MiB
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[5:]))
"""


def _probe(mode: str, **env) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_fixed_thresholds_reuse_freed_buffers():
    applied, faults = _probe("steady")
    assert applied == "True" and faults == 0
    applied, faults = _probe("adaptive")
    assert applied == "False" and faults > 1000  # 40 MiB: 10,240 pages of 4 KiB, every call


def test_a_users_own_malloc_setting_is_left_alone():
    applied, _ = _probe("steady", MALLOC_MMAP_THRESHOLD_="131072")
    assert applied == "False"
