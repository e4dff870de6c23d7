"""Hostile input (issue 17): imports confined to specs, huge numbers, absurd sizes, files
too large, symlink loops, invalid UTF-8 and deep nesting are located `SpecError`s; nothing
echoes a file that is not a spec."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

import assembler
from assembler.cli import main
from assembler.errors import ParseError, SpecError
from assembler.resolve import Limits
from assembler.summary import fmt_bytes, fmt_flops

NET = "network n(x: [1, 8, 8]) {{\n    y = x -> {}\n    return y\n}}\n"


def error_of(text: str, name: str = "h.net", **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        assembler.check(assembler.parse(text, name), **kw)
    return info.value


def first_line(e: SpecError) -> str:
    return e.render().splitlines()[0]


# ---------------------------------------------------------------------------------------------
# 7. `use` reads spec files and checkpoint directories only


@pytest.fixture
def secret(tmp_path):
    (tmp_path / "secret.txt").write_text("TOPSECRET=42\n")
    (tmp_path / "link.net").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize("path, message", [
    ("secret.txt", "cannot use 'secret.txt': it is not a .net spec file"),
    ("link.net", "cannot use 'link.net': it is not a .net spec file"),
    ("/proc/self/environ", "cannot use '/proc/self/environ': it is not a .net spec file"),
    ("empty", "checkpoint directory 'empty' has no spec.net"),
])
def test_use_refuses_what_is_not_a_spec_and_shows_nothing_of_it(secret, path, message):
    text = f'use "{path}" as s\n\n' + NET.format("s.y")
    e = error_of(text, str(secret / "main.net"))
    assert message in first_line(e) and e.line == 1
    assert "TOPSECRET" not in e.render() and "PATH=" not in e.render()
    assert [d.message for d in e.diagnostics if "undefined" in d.message or "unknown" in d.message] == []


def test_use_of_a_symlink_loop_is_named(tmp_path):
    (tmp_path / "loop.net").symlink_to(tmp_path / "loop.net")
    e = error_of('use "loop.net" as s\n\n' + NET.format("relu"), str(tmp_path / "main.net"))
    assert first_line(e).endswith("error: cannot use 'loop.net': a symlink loop (a link that leads back to itself)")


def test_reading_a_symlink_loop_is_named(tmp_path):
    (tmp_path / "loop.net").symlink_to(tmp_path / "loop.net")
    with pytest.raises(SpecError, match="symlink loop"):
        assembler.load(tmp_path / "loop.net")


def test_a_spec_symlink_to_a_spec_is_fine(tmp_path):
    (tmp_path / "real.net").write_text(NET.format("relu"))
    (tmp_path / "alias.net").symlink_to(tmp_path / "real.net")
    assembler.check(assembler.parse('use "alias.net" as s\n\n' + NET.format("s.y"), str(tmp_path / "m.net")))


# ---------------------------------------------------------------------------------------------
# 8. Numbers beyond any sane range


@pytest.mark.parametrize("element, message", [
    ("conv(" + "9" * 5000 + ", 3)", "h.net:2:19: error: this number has 5,000 characters, more than a spec reads"),
    ("conv(99999999999999999999, 3)", "h.net:2:19: error: argument 'out' of 'conv' is out of range"),
    ("dropout(1e400)", "h.net:2:22: error: argument 'p' of 'dropout' must be a finite number, got inf"),
    ("conv(8, 3, pad=2147483647)", "h.net:2:14: error: this value would hold 147,573,952,864,554,320,000 numbers"),
    ("upsample(100000)", "h.net:2:14: error: this value would hold 640,000,000,000 numbers per sample"),
])
def test_huge_numbers_are_located_errors(element, message):
    assert first_line(error_of(NET.format(element))).startswith(message)


def test_huge_numbers_in_settings_and_merges():
    text = ("network n(x: [1, 8, 8]) {\n    y = gate(x, x, init=[1e400, 0])\n    return y\n}\n\n"
            "match n.y -> n.y : meta(hidden=100000000000000000000)\n\n"
            "train n {\n    epochs = 1e400\n    seed = 99999999999999999999\n    optimizer = sgd(lr=1e400)\n}\n")
    lines = [d.render().splitlines()[0] for d in error_of(text).diagnostics]
    assert lines == [
        "h.net:2:20: error: argument 'init' of 'gate' must be a finite number, got [inf, 0]",
        "h.net:6:32: error: 'hidden' must be a whole number >= 0",
        "h.net:9:14: error: setting 'epochs' must be a whole number, got inf",
        "h.net:10:12: error: setting 'seed' is out of range (at most 2,147,483,647 in size), got 1.000e+20",
        "h.net:11:24: error: 'lr' of sgd must be a finite number, got inf"]


def test_counts_of_any_size_format():
    assert fmt_flops(10**40) == "10,000,000,000,000,000,000,000,000.00 P"
    assert fmt_flops(1_234_567) == "1.23 M" and fmt_flops(12) == "12 "
    assert fmt_bytes(2**70) == "1,073,741,824 TB" and fmt_bytes(1536) == "1.5 KB" and fmt_bytes(3) == "3 B"


# ---------------------------------------------------------------------------------------------
# 9. Absurd sizes are refused before compile allocates them


def test_a_huge_layer_is_refused_where_it_is_written():
    e = error_of(NET.format("conv(100000, 3) -> conv(100000, 3)"))
    assert first_line(e) == ("h.net:2:33: error: this module would have 90,000,100,000 parameters, more than the "
                             "limit of 2,000,000,000")
    assert e.diagnostics[0].hint == "make it smaller, or raise the limit (--max-params, ASSEMBLER_MAX_PARAMS)"


def test_the_limits_can_be_raised_and_lowered(monkeypatch):
    text = NET.format("conv(100000, 3) -> conv(100000, 3)")
    assembler.check(assembler.parse(text, "h.net"), Limits(params=10**12))
    monkeypatch.setenv("ASSEMBLER_MAX_PARAMS", "1e12")
    assembler.check(assembler.parse(text, "h.net"))
    monkeypatch.setenv("ASSEMBLER_MAX_PARAMS", "10")
    assert "more than the limit of 10" in first_line(error_of(NET.format("conv(8, 3)")))


def test_the_total_of_all_networks_is_limited():
    half = "network a{}(x: [1, 8, 8]) {{\n    y = x -> conv(40000, 3) -> conv(4000, 3)\n    return y\n}}\n\n"
    e = error_of(half.format(1) + half.format(2))
    assert first_line(e).startswith("h.net:7:32: error: the spec's modules would have more than 2,000,000,000 "
                                    "parameters together")


def test_cli_check_limits_and_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.net").write_text(NET.format("conv(8, 3, pad=1) -> relu"))
    r = CliRunner().invoke(main, ["check", "a.net"])
    assert r.exit_code == 0, r.output
    assert "80 params (80 trainable), 5.12 KFLOPs, 320 B of weights, 4.2 KB of values per sample" in r.output
    r = CliRunner().invoke(main, ["check", "--max-params", "50", "a.net"])
    assert r.exit_code == 1 and "a.net:2:14: error: this module would have 80 parameters" in r.output
    r = CliRunner().invoke(main, ["check", "--max-activation", "100", "a.net"])
    assert r.exit_code == 1 and "input 'x' would hold" not in r.output and "512 numbers per sample" in r.output


def test_spec_files_larger_than_the_limit_are_not_read(tmp_path, monkeypatch):
    big = tmp_path / "big.net"
    big.write_text(NET.format("relu") + "# padding\n" * 100)
    monkeypatch.setenv("ASSEMBLER_MAX_SPEC_BYTES", "500")
    with pytest.raises(SpecError, match="larger than 500 bytes, the limit for a spec file"):
        assembler.load(big)
    imported = tmp_path / "main.net"
    imported.write_text('use "big.net" as b\n\n' + NET.format("b.y"))
    with pytest.raises(SpecError, match="larger than 500 bytes"):
        assembler.load(imported)


# ---------------------------------------------------------------------------------------------
# 12. Invalid UTF-8 and deep nesting carry a line and a column


def test_invalid_utf8_is_located(tmp_path):
    f = tmp_path / "bad.net"
    f.write_bytes(b"network n(x: [1, 8, 8]) {\n    y = x -> r\xc3\xa9lu \xff\n    return y\n}\n")
    with pytest.raises(SpecError) as info:
        assembler.load(f)
    e = info.value
    assert (e.line, e.column) == (2, 19)
    assert e.render().splitlines()[1:3] == ["        y = x -> rélu \ufffd", "                      ^"]


def test_deep_nesting_is_located():
    text = NET.format("conv(" + "[" * 200 + "1" + "]" * 200 + ", 3)")
    with pytest.raises(ParseError) as info:
        assembler.parse(text, "deep.net")
    e = info.value
    assert (e.line, e.column) == (2, 146)
    assert first_line(e) == "deep.net:2:146: error: the spec nests lists, merges or calls more than 128 levels deep"


def test_check_json_of_errors_has_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.net").write_text(NET.format("conv(8, 0)"))
    data = json.loads(CliRunner().invoke(main, ["check", "--json", "bad.net"]).stdout)
    assert data == {"ok": False, "files": [{"file": "bad.net", "ok": False, "diagnostics": [
        {"file": "bad.net", "line": 2, "column": 22, "width": 1, "message": "argument 'k' of 'conv' must be "
         "positive, got 0", "hint": None, "notes": []}]}]}
    assert os.environ.get("ASSEMBLER_MAX_PARAMS") is None
