"""What a new user tripped over, end to end where they met it: eval's errors and output,
paths on the command line, progress that names what trains, data size limits."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from assembler.cli import main
from conftest import cli

SPEC = """\
network n(x: [1, 8, 8]) {
    h = x -> conv(8, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    y = h -> gap -> linear(5)
    return y
}

train n {
    data = digits(classes=[5, 6, 7, 8, 9], per_class=20)
    epochs = 1
}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("friction")
    (root / "n.net").write_text(SPEC)
    old = os.getcwd()
    os.chdir(root)
    try:
        code, out, err = cli("train", "n.net", "--out", "runs")
        assert code == 0, err
    finally:
        os.chdir(old)
    return root, err


def test_progress_names_the_network(trained):
    _, err = trained
    assert "n: epoch 1  loss" in err


def test_eval_on_data_with_more_classes_than_outputs(trained, monkeypatch):
    root, _ = trained
    monkeypatch.chdir(root)
    code, _, err = cli("eval", "runs/n", "--data", 'digits(split="test")')
    assert code == 1
    assert 'data digits(split="test") has 10 classes but the network gives only 5 outputs' in err


def test_eval_of_a_spec_file_or_a_folder_of_checkpoints(trained, monkeypatch):
    root, _ = trained
    monkeypatch.chdir(root)
    code, _, err = cli("eval", "n.net")
    assert code == 1 and "not a checkpoint: n.net is a file" in err and "assembler train n.net" in err
    code, _, err = cli("eval", "runs")
    assert code == 1 and "not a checkpoint: runs has no meta.json" in err and "runs/n" in err


def test_eval_names_classes_and_rounds_numbers(trained, monkeypatch):
    root, _ = trained
    monkeypatch.chdir(root)
    code, out, _ = cli("eval", "runs/n", "--json", "-v")
    result = json.loads(out)
    assert list(result["per_class"]) == ["5", "6", "7", "8", "9"]
    assert all(len(repr(v).split(".")[-1]) <= 6 for v in result["per_class"].values() if v is not None)
    assert result["data"] == 'digits(split="test", classes=[5, 6, 7, 8, 9])'


def test_a_data_path_on_the_command_line_is_relative_to_the_current_folder(trained, monkeypatch, tmp_path):
    root, _ = trained
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", x=rng.random((6, 1, 8, 8), dtype=np.float32), y=np.arange(6) % 5)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("eval", str(root / "runs/n"), "--data", 'npz("mine.npz")', "--json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 6


def test_data_files_beyond_the_limit_are_refused_before_reading(tmp_path, monkeypatch):
    from assembler.data import npz
    from assembler.errors import DataError
    np.savez(tmp_path / "big.npz", x=np.zeros((100, 1, 8, 8), np.float32), y=np.zeros(100, np.int64))
    monkeypatch.setenv("ASSEMBLER_MAX_DATA_BYTES", "1000")
    with pytest.raises(DataError) as e:
        npz(tmp_path / "big.npz")
    assert "more than the limit of 1,000 for data" in e.value.message
    assert "ASSEMBLER_MAX_DATA_BYTES" in e.value.diagnostics[0].hint


def test_written_files_get_a_normal_files_permissions(tmp_path):
    """fmt -w and graph -o write atomically; a new file is readable as any new file (umask),
    an existing one keeps its mode."""
    from pathlib import Path
    specs = Path(__file__).resolve().parent.parent / "specs" / "digits"
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(main, ["graph", str(specs / "source.net"), "-o", str(tmp_path / "g.svg")])
        assert r.exit_code == 0, r.output
        assert (tmp_path / "g.svg").stat().st_mode & 0o777 == 0o644
        spec = tmp_path / "s.net"
        spec.write_text((specs / "source.net").read_text() + "\n\n")
        spec.chmod(0o600)
        assert CliRunner().invoke(main, ["fmt", "-w", str(spec)]).exit_code == 0
        assert spec.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_fmt_reads_as_check_does(tmp_path, monkeypatch):
    """`fmt` refuses what `check` refuses, with the same located errors: invalid UTF-8 at its
    line and column, a file over the size limit before reading it."""
    bad = tmp_path / "bad.net"
    bad.write_bytes(b"network n(x: [1]) {\n  y = x \xff\n  return y\n}\n")
    r = CliRunner().invoke(main, ["fmt", str(bad)])
    assert r.exit_code == 1
    assert r.output.startswith(f"{bad}:2:9: error: the file is not valid UTF-8 text: byte 0xff cannot start or "
                               "continue a character\n")
    big = tmp_path / "big.net"
    big.write_text("network n(x: [1]) {\n  return x\n}\n" + "# padding\n" * 100)
    monkeypatch.setenv("ASSEMBLER_MAX_SPEC_BYTES", "500")
    r = CliRunner().invoke(main, ["fmt", "--check", str(big)])
    assert r.exit_code == 1
    assert f"{big}: error: {big} is larger than 500 bytes, the limit for a spec file" in r.output


def test_a_checkpoint_without_its_spec_says_so(trained, tmp_path):
    import shutil
    root, _ = trained
    damaged = tmp_path / "c"
    shutil.copytree(root / "runs" / "n", damaged)
    (damaged / "spec.net").unlink()
    r = CliRunner().invoke(main, ["eval", str(damaged)])
    assert r.exit_code == 1
    assert r.output == (f"{damaged}: error: damaged checkpoint: {damaged} has meta.json but no spec.net\n"
                        "hint: restore the checkpoint (or its spec.net), or retrain it\n")


def test_an_output_in_a_missing_folder_is_a_located_error(tmp_path):
    from pathlib import Path
    spec = Path(__file__).resolve().parent.parent / "specs" / "digits" / "source.net"
    out = tmp_path / "missing" / "g.svg"
    r = CliRunner().invoke(main, ["graph", str(spec), "-o", str(out)])
    assert r.exit_code == 1
    assert r.output == (f"{out}: error: cannot write {out}: No such file or directory\n"
                        "hint: write into an existing folder you may write to\n")
