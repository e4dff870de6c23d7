"""The front end as users meet it: every spec checks and round-trips through the formatter,
the formatter keeps comments and is idempotent, the CLI's check/fmt behave, the grammar
ships inside the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
from click.testing import CliRunner

import assembler
from assembler.cli import main
from assembler.verify import VerifyError, verify

from conftest import ROOT, SHARED, SPECS

FILES = sorted(ROOT.glob("specs/**/*.net")) + sorted(SHARED.glob("*.net"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_spec_checks_and_round_trips(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    spec = assembler.load(path.name)
    verify(assembler.check(spec))
    text = assembler.format(spec)
    again = assembler.parse(text, path.name)
    assert again == spec
    assert assembler.format(again) == text
    assert [c.text for c in again.comments] == [c.text for c in spec.comments]


def test_examples_are_copied_faithfully():
    """specs/digits holds the shared examples in canonical format: the same meaning and the
    same comments, laid out as `assembler fmt` lays them out."""
    for f in SHARED.glob("*.net"):
        ours = assembler.parse((ROOT / "specs" / "digits" / f.name).read_text(), f.name)
        theirs = assembler.parse(f.read_text(), f.name)
        assert ours == theirs, f.name
        assert [c.text for c in ours.comments] == [c.text for c in theirs.comments], f.name


def test_the_project_specs_are_formatted():
    files = [str(p) for p in sorted(ROOT.glob("specs/**/*.net"))]
    r = CliRunner().invoke(main, ["fmt", "--check", *files])
    assert r.exit_code == 0, r.output


def test_check_prints_a_summary_per_network(monkeypatch):
    monkeypatch.chdir(ROOT / "specs" / "digits")
    r = CliRunner().invoke(main, ["check", "tailor.net"])
    assert r.exit_code == 0, r.output
    assert "network student(x: [1, 8, 8]) -> logits: 72,706 params (12,130 trainable)" in r.stdout
    assert "    c2      [32, 4, 4]" in r.stdout
    data = json.loads(CliRunner().invoke(main, ["check", "--json", "source.net"]).stdout)
    assert data["ok"] and [f["file"] for f in data["files"]] == ["source.net"]
    report = data["files"][0]
    assert report["networks"]["cnn"]["bindings"]["c4"] == [64, 2, 2]
    assert report["spec"]["items"][0]["name"] == "cnn"
    assert report["networks"]["cnn"]["param_bytes"] == 4 * report["networks"]["cnn"]["params"]


def test_formatter_layout_and_comments():
    text = ("# head\r\nnetwork n(x: [1, 8, 8]) {   # trailing\r\n  a = x -> conv(4, 3, pad=1)  # why\r\n"
            "     -> relu   # more\r\n\r\n\r\n  # before b\r\n  b = add(a,\r\n   a)\r\n  return b }")
    spec = assembler.parse(text)
    out = assembler.format(spec)
    assert out == ("# head\nnetwork n(x: [1, 8, 8]) {  # trailing\n    # why\n"
                   "    a = x -> conv(4, 3, pad=1) -> relu  # more\n\n    # before b\n    b = add(a, a)\n"
                   "    return b\n}\n")
    assert assembler.format(assembler.parse(out)) == out
    assert assembler.parse(out) == spec


def test_formatter_wraps_long_statements():
    """Past 100 columns: breaks after the shallowest commas (the next line in the column after
    their bracket), else before `->` (under the chain's first arrow); a trailing comment after
    the last line. Idempotent, and the meaning is kept."""
    gate = ("gate(b2 -> proxy(64, 4), b3 -> proxy(64, 2), b4 -> proxy(64, 2), init=[-2.0, -2.0, -2.0], "
            'mix="relu")')
    chain = "b5 -> " + " -> ".join(["conv(64, 3, pad=1) -> batchnorm -> relu"] * 3)
    data = ('[digits(split="train", classes=[0, 1, 2, 3, 4, 5, 6, 7, 8]), '
            'digits(split="train", classes=[1, 2, 3, 4, 5, 6, 7, 8, 9], invert=true)]')
    text = (f"network n(x: [64, 4, 4]) {{\n    b2 = x\n    b3 = x\n    b4 = x\n    b5 = {gate}  # three proxies\n"
            f"    y = {chain}\n    return y\n}}\n\ntrain n {{\n    data = {data}\n    epochs = 1\n}}\n")
    out = assembler.format(assembler.parse(text))
    assert out == (
        "network n(x: [64, 4, 4]) {\n    b2 = x\n    b3 = x\n    b4 = x\n"
        "    b5 = gate(b2 -> proxy(64, 4), b3 -> proxy(64, 2), b4 -> proxy(64, 2), init=[-2.0, -2.0, -2.0],\n"
        '              mix="relu")  # three proxies\n'
        "    y = b5 -> conv(64, 3, pad=1) -> batchnorm -> relu -> conv(64, 3, pad=1) -> batchnorm -> relu\n"
        "           -> conv(64, 3, pad=1) -> batchnorm -> relu\n"
        "    return y\n}\n\ntrain n {\n"
        '    data = [digits(split="train", classes=[0, 1, 2, 3, 4, 5, 6, 7, 8]),\n'
        '            digits(split="train", classes=[1, 2, 3, 4, 5, 6, 7, 8, 9], invert=true)]\n'
        "    epochs = 1\n}\n")
    assert all(len(line) <= 100 for line in out.splitlines())
    assert assembler.format(assembler.parse(out)) == out
    assert assembler.parse(out) == assembler.parse(text)


def test_a_statement_without_a_break_that_fits_stays_as_short_as_it_can():
    """A string longer than the width cannot break: the statement keeps it whole."""
    long = "x" * 120
    text = f'train n {{\n    note = "{long}"\n}}\n'
    assert assembler.format(assembler.parse(text)) == text


def test_a_long_comment_is_never_wrapped():
    """A comment line longer than the width, even one holding `->` or commas in brackets, stays
    whole (a wrapped tail would be code: `-> decay` would join the setting above it)."""
    for text in ("network n(x: [4]) {\n    y = x -> linear(2)\n    return y\n}\n# " + "z" * 95 + " -> relu\n",
                 "train n {\n    epochs = 1\n    # " + "x" * 90 + " -> decay\n}\n",
                 "train n {\n    # see f(a, b, c) " + "y" * 90 + "\n    epochs = 1\n}\n"):
        assert assembler.format(assembler.parse(text)) == text


@pytest.mark.parametrize("width", [24, 100])
def test_comments_on_every_line_survive_wrapping(width, monkeypatch):
    """The project's specs with a comment at the end of every line, formatted at `width`: the
    meaning and every comment are kept, and formatting again changes nothing (a comment after a
    wrapped header's `{` stays there)."""
    from assembler import printer
    monkeypatch.setattr(printer, "WIDTH", width)
    for path in sorted(ROOT.glob("specs/**/*.net")):
        lines = path.read_text().split("\n")
        text = "\n".join(f"{line}  # c{i}" if line.strip() and not line.lstrip().startswith("#") else line
                         for i, line in enumerate(lines))
        spec = assembler.parse(text, str(path))
        out = assembler.format(spec)
        again = assembler.parse(out, str(path))
        assert again == spec, path
        assert len(again.comments) == len(spec.comments), path
        assert assembler.format(again) == out, path


def test_fmt_write_and_check(tmp_path):
    f = tmp_path / "a.net"
    f.write_text("network n(x: [4]) {\n  y = x->linear(2)\n  return y\n}")
    r = CliRunner().invoke(main, ["fmt", "--check", str(f)])
    assert r.exit_code == 1 and "not formatted" in r.stdout
    assert CliRunner().invoke(main, ["fmt", "--write", str(f)]).exit_code == 0
    assert f.read_text() == "network n(x: [4]) {\n    y = x -> linear(2)\n    return y\n}\n"
    assert CliRunner().invoke(main, ["fmt", "--check", str(f)]).exit_code == 0
    assert list(tmp_path.iterdir()) == [f]  # no temporary files left behind


def test_exit_codes_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network n(x: [4]) {\n  y = x -> linaer(2)\n  return y\n}\n")
    r = subprocess.run([sys.executable, "-m", "assembler", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.splitlines()[:4] == [
        f"{bad}:2:12: error: unknown op 'linaer'", "      y = x -> linaer(2)", "               ^^^^^^",
        "hint: did you mean 'linear'?"]
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "assembler", "check", "--nope"], capture_output=True, text=True)
    assert r.returncode == 2
    r = subprocess.run([sys.executable, "-m", "assembler", "check", str(tmp_path / "missing.net")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no such file" in r.stderr


def test_grammar_ships_in_the_wheel(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr[-300:]}")
    assert "project.license" not in r.stdout + r.stderr  # no deprecated license table
    wheel = next(tmp_path.glob("assembler-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "assembler/grammar/net.lark" in names
    assert "assembler/data/digits.npz" in names


def test_verify_finds_a_broken_graph(monkeypatch):
    monkeypatch.chdir(SPECS)
    checked = assembler.check(assembler.load("tailor.net"))
    net = checked.networks["student"]
    reordered = net.model_copy(update={"nodes": net.nodes[::-1]})
    broken = checked.model_copy(update={"networks": {**checked.networks, "student": reordered}})
    with pytest.raises(VerifyError, match="reads .* before"):
        verify(broken)
    undeclared = checked.model_copy(update={"modules": {k: m for k, m in checked.modules.items()
                                                        if not k.startswith("student.c2")}})
    with pytest.raises(VerifyError, match="undeclared module 'student.c2"):
        verify(undeclared)
