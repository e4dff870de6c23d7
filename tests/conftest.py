"""Test-wide settings: a trained-import cache shared by the test workers of one run."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _assembler_cache(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if root.name.startswith("popen-gw") else root
    os.environ["ASSEMBLER_CACHE"] = str(shared / "assembler-cache")
    yield


def pytest_configure(config):
    # Two test workers on two cores: one thread each, also in the subprocesses tests start.
    # (Tiny digits models run many times slower when threads oversubscribe the cores.)
    import torch
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
