"""Test-wide settings and the paths and fixtures several test files share."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs" / "digits"  # the project's example specs
SHARED = ROOT.parent / "shared" / "design" / "examples"  # the design's examples (when present)
GOLDEN = Path(__file__).resolve().parent / "golden"  # golden diagnostics
TESTS = Path(__file__).resolve().parent  # also where the test plug-ins live (`run(..., plugins=)`)
ASSEMBLER = str(Path(sys.executable).with_name("assembler"))  # the installed command

#: Hypothesis settings for property tests that compile or check many specs.
FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cli(*args: str) -> tuple[int, str, str]:
    """`assembler ARGS` in this process: (exit code, stdout, stderr); an exception other than
    the command's exit is raised."""
    from click.testing import CliRunner
    from assembler.cli import main
    r = CliRunner().invoke(main, list(args))
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def assembler_cmd(*args: str) -> list[str]:
    """The command line `assembler ARGS`, for `run`."""
    return [ASSEMBLER, *args]


def torchrun_cmd(*args: str, ranks: int = 2) -> list[str]:
    """`torchrun --standalone ... -m assembler ARGS`: the launcher binds a free port itself and
    the ranks meet on its store (two test workers may each start one at the same time; a port
    picked here and released could be taken by the other before torchrun binds it)."""
    return [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={ranks}",
            "-m", "assembler", *args]


def run(args: list[str], cwd, fault: str | None = None, plugins: str | None = None,
        **env: str) -> subprocess.CompletedProcess:
    """A command in a subprocess with this session's environment as it is now (its cache
    included), unbuffered, with `fault` as its only ASSEMBLER_FAULT; `plugins`: modules of
    tests/ named in ASSEMBLER_PLUGINS; `env`: more variables."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    full.pop("ASSEMBLER_FAULT", None)
    if fault:
        full["ASSEMBLER_FAULT"] = fault
    if plugins:
        full["ASSEMBLER_PLUGINS"] = plugins
        full["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def same_run(a: Path, b: Path) -> None:
    """Two checkpoints of one run are the same: equal weights, bit for bit, and equal metrics
    (each line of metrics.jsonl and meta.json's final metrics), wall-clock seconds aside."""
    import json

    import torch
    from safetensors.torch import load_file
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b)
    ma, mb = (json.loads((p / "meta.json").read_text())["metrics"] for p in (a, b))
    assert {k: v for k, v in ma.items() if k != "seconds"} == {k: v for k, v in mb.items() if k != "seconds"}


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


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A fresh folder, made the current one, holding copies of the example specs."""
    for f in SPECS.glob("*.net"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_configure(config):
    # Two test workers on two cores: one thread each, also in the subprocesses tests start.
    # (Tiny digits models run many times slower when threads oversubscribe the cores.)
    import torch
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
