"""Test-wide settings and the paths and fixtures several test files share."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs" / "digits"  # the project's example specs
SHARED = ROOT.parent / "shared" / "design" / "examples"  # the design's examples (when present)
GOLDEN = Path(__file__).resolve().parent / "golden"  # golden diagnostics

#: Hypothesis settings for property tests that compile or check many specs.
FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="session")
def _assembler_cache(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if root.name.startswith("popen-gw") else root
    os.environ["ASSEMBLER_CACHE"] = str(shared / "assembler-cache")
    yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding copies of the example specs, so that `use "source.net"` resolves."""
    d = tmp_path_factory.mktemp("specs")
    for p in SPECS.glob("*.net"):
        shutil.copy(p, d / p.name)
    return d


def pytest_configure(config):
    # Two test workers on two cores: one thread each, also in the subprocesses tests start.
    # (Tiny digits models run many times slower when threads oversubscribe the cores.)
    import torch
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
