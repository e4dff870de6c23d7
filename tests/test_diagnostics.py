"""Golden diagnostics: every bad spec in tests/golden/NAME.net has its whole rendered message
in tests/golden/NAME.err, exactly as `assembler check NAME.net` prints it to stderr when run
from inside tests/golden/ (`file:line:col: error: message`, the source line, the caret line and
the `hint:` lines). Helper files that the cases import live in tests/golden/lib/.

Messages that name an absolute path hold `$GOLDEN` in place of the golden folder.

Regenerate after an intended change of wording with

    UPDATE_GOLDEN=1 pytest tests/test_diagnostics.py

and read every message you accept: it must point at the right place and say what to do.
Cases in XFAIL are known defects: their .err holds the message we believe is right, written by
hand, and UPDATE_GOLDEN leaves them alone. When a fix lands the case starts passing, the
strict xfail fails, and the entry must be removed from XFAIL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import assembler
from assembler import resolve
from assembler.cli import main
from assembler.errors import SpecError

from conftest import GOLDEN, SPECS

UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")

CASES = sorted(p.stem for p in GOLDEN.glob("*.net"))

# Known defects of the project (not of these tests). Reason: what is wrong today.
XFAIL = {
    # -- places: names are underlined with the span of the whole statement --------------------
    # -- messages that mislead -----------------------------------------------------------------
    # -- errors lost or invented ---------------------------------------------------------------
    # -- a Python exception instead of a diagnostic ----------------------------------------------
    # -- accepted although wrong ---------------------------------------------------------------
}


def _normalise(text: str) -> str:
    return text.replace(str(GOLDEN.resolve()), "$GOLDEN").replace(str(GOLDEN), "$GOLDEN")


def _expected(name: str) -> str:
    err = GOLDEN / f"{name}.err"
    assert err.is_file(), f"{err.name} is missing: run UPDATE_GOLDEN=1 pytest {Path(__file__).name}"
    return err.read_text(encoding="utf-8").rstrip("\n")


def _check(name: str) -> str | None:
    """The rendered error of checking NAME.net (cwd must be the golden folder), or None."""
    try:
        spec = resolve.read(f"{name}.net")
        assembler.check(spec)
    except SpecError as e:
        return _normalise(e.render())
    return None


def _params():
    for name in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_golden(name, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    actual = _check(name)
    if UPDATE and name not in XFAIL:
        assert actual is not None, f"{name}.net was accepted; a golden case must be rejected"
        (GOLDEN / f"{name}.err").write_text(actual + "\n", encoding="utf-8")
        return
    expected = _expected(name)
    assert actual is not None, f"{name}.net was accepted; expected:\n{expected}"
    assert actual == expected


def test_golden_set():
    assert len(CASES) >= 40
    assert set(XFAIL) <= set(CASES), sorted(set(XFAIL) - set(CASES))
    orphans = sorted(p.stem for p in GOLDEN.glob("*.err") if p.stem not in CASES)
    assert not orphans, f".err files without a .net: {orphans}"
    if not UPDATE:
        missing = sorted(n for n in CASES if not (GOLDEN / f"{n}.err").is_file())
        assert not missing, f"run UPDATE_GOLDEN=1 pytest {Path(__file__).name}; missing: {missing}"


def test_render_is_stable(monkeypatch):
    """Rendering twice gives the same text, and the first diagnostic's place is exposed."""
    monkeypatch.chdir(GOLDEN)
    with pytest.raises(SpecError) as info:
        assembler.check(resolve.read("several_errors.net"))
    e = info.value
    assert e.render() == e.render() == str(e)
    assert (e.filename, e.line, e.column) == ("several_errors.net", 2, 15)
    assert len(e.diagnostics) == 5


# ---------------------------------------------------------------------------------------------
# Through the command line


CLI_CASES = ["parse_unterminated_string", "parse_unexpected_eof", "undefined_name", "several_errors",
             "import_with_errors", "unknown_setting", "missing_import", "trainable_imported"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_check_golden(name, runner, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    result = runner.invoke(main, ["check", f"{name}.net"])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert _normalise(result.stderr).rstrip("\n") == _expected(name)
    assert "Traceback" not in result.stderr


def test_cli_check_several_files(runner, monkeypatch):
    """Every file is checked; each bad one reports; the exit code is 1."""
    monkeypatch.chdir(GOLDEN)
    result = runner.invoke(main, ["check", "--quiet", "undefined_name.net", str(SPECS / "source.net"),
                                  "unknown_op.net"])
    assert result.exit_code == 1
    assert result.stderr.startswith(_expected("undefined_name") + "\n")
    assert _expected("unknown_op") in result.stderr


def test_cli_missing_file(runner, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    result = runner.invoke(main, ["check", "nope.net"])
    assert result.exit_code == 1
    assert result.stderr == "nope.net: error: no such file: nope.net\nhint: check the path\n"


def test_cli_directory_without_spec(runner, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    result = runner.invoke(main, ["check", "lib"])
    assert result.exit_code == 1
    assert "spec.net" in result.stderr


@pytest.mark.parametrize("args", [
    ["check", "--bogus", "undefined_name.net"],
    ["check"],
    ["frobnicate"],
    ["fmt", "--write", "--check", "nope.net"],
], ids=["unknown-flag", "missing-argument", "unknown-command", "conflicting-flags"])
def test_cli_usage_error(args, runner, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.net")))
def test_cli_examples_check(spec, runner, monkeypatch):
    monkeypatch.chdir(SPECS)
    result = runner.invoke(main, ["check", spec])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"{spec}: ok")
    assert "error" not in result.stderr


def test_golden_helper_import_is_valid():
    """The helper file the golden cases import is itself valid."""
    assembler.load(GOLDEN / "lib" / "source.net")


# ---------------------------------------------------------------------------------------------
# Deep nesting


def _nested(depth: int, kind: str = "parens") -> str:
    body = {"parens": "(" * depth + "x" + ")" * depth,
            "list": "x -> conv(" + "[" * depth + "1" + "]" * depth + ", 3)",
            "merge": "add(" * depth + "x" + ", x)" * depth}[kind]
    return f"network n(x: [1, 8, 8]) {{\n    y = {body}\n    return y\n}}\n"


@pytest.mark.parametrize("depth, kind", [(100, "parens"), (2000, "parens"), (100, "list"), (100, "merge")])
def test_moderate_nesting_is_fine(depth, kind):
    try:
        assembler.check(assembler.parse(_nested(depth, kind), "nested.net"))
    except SpecError as e:
        assert kind == "list" and "must be a whole number" in e.message


@pytest.mark.parametrize("kind", ["list", "merge"])
def test_deep_nesting_is_a_spec_error(kind):
    with pytest.raises(SpecError):
        assembler.check(assembler.parse(_nested(2000, kind), "nested.net"))


def test_cli_deep_nesting(tmp_path, monkeypatch):
    from assembler.cli import run
    (tmp_path / "nested.net").write_text(_nested(2000, "list"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["assembler", "check", "nested.net"])
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 1


# ---------------------------------------------------------------------------------------------
# Paths in `use` that the operating system refuses


@pytest.mark.parametrize("path, error", [
    ("a\\x00b", "ValueError: embedded null byte"),
    ("a" * 300, "OSError: [Errno 36] File name too long"),
    ("\\ud800", "UnicodeEncodeError: surrogates not allowed"),
], ids=["null-byte", "name-too-long", "surrogate"])
def test_bad_use_path_is_a_spec_error(path, error, tmp_path):
    text = f'use "{path}" as p\n\nnetwork n(x: [1, 8, 8]) {{\n    y = x -> relu\n    return y\n}}\n'
    with pytest.raises(SpecError) as info:
        assembler.check(assembler.parse(text, str(tmp_path / "bad_use.net")))
    assert info.value.line == 1


def test_independent_mistakes_are_all_reported(monkeypatch):
    """Five mistakes that do not depend on each other (two in one chain) give five errors."""
    monkeypatch.chdir(GOLDEN)
    with pytest.raises(SpecError) as info:
        assembler.check(resolve.read("five_independent_errors.net"))
    assert [d.line for d in info.value.diagnostics] == [2, 2, 4, 8, 11]


def test_cli_check_json_has_one_shape(runner, monkeypatch):
    monkeypatch.chdir(GOLDEN)
    for files in (["undefined_name.net"], ["undefined_name.net", str(SPECS / "source.net")]):
        r = runner.invoke(main, ["check", "--json", *files])
        data = json.loads(r.stdout)
        assert r.exit_code == 1 and data["ok"] is False and [f["file"] for f in data["files"]] == files
        assert data["files"][0]["diagnostics"][0]["line"] == 3
        assert all(set(f) >= {"file", "ok", "diagnostics"} for f in data["files"])
