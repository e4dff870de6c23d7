"""Fuzzing the front end with mutated spec files (issue 17): byte flips, token edits,
truncation, huge numbers, deep nesting, invalid UTF-8, look-alike characters and mixed line
endings. Reading, parsing and checking a mutant either succeeds or raises `SpecError`, whose
rendering names a place in the file; any other exception is a bug.

A few hundred seeded mutants run in a few seconds; ASSEMBLER_FUZZ_MUTANTS=20000 runs more.
"""

from __future__ import annotations

import os
import random
import traceback

import pytest

import assembler
from assembler.errors import SpecError

from conftest import SPECS
from test_fuzz import POOL, tokenize

EXAMPLES = {p.name: p.read_bytes() for p in sorted(SPECS.glob("*.net"))}
COUNT = int(os.environ.get("ASSEMBLER_FUZZ_MUTANTS", "240"))

LOOK_ALIKES = ["\u0430", "\u03bf", "\u0435", "\uff11", "\u2212", "\u00a0", "\u200b", "\u0663", "\u2028", "\ufeff",
               "\u037e", "\uff08", "\u2010", "\u00b7"]
LINE_ENDINGS = [b"\r\n", b"\r", b"\n\r", b"\n\n\n", "\u2028".encode(), b"\x0b", b"\x0c"]
HUGE = [b"9" * 5000, b"1e999", b"-1e999", b"99999999999999999999", b"0.0000000000000000000001", b"+2147483648",
        b"1" * 4000, b"1e-400"]


def byte_flip(rng, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def token_edit(rng, data: bytes) -> bytes:
    toks = tokenize(data.decode("utf-8"))
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(toks))
        how = rng.choice(["delete", "duplicate", "replace", "insert"])
        if how == "delete":
            del toks[i]
        elif how == "duplicate":
            toks[i:i] = [toks[i]]
        elif how == "replace":
            toks[i] = rng.choice(POOL)
        else:
            toks[i:i] = [rng.choice(POOL), " "]
    return "".join(toks).encode("utf-8")


def truncate(rng, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def huge_number(rng, data: bytes) -> bytes:
    toks = tokenize(data.decode("utf-8"))
    numbers = [i for i, t in enumerate(toks) if t[:1].isdigit()] or [0]
    toks[rng.choice(numbers)] = rng.choice(HUGE).decode()
    return "".join(toks).encode("utf-8")


def deep_nesting(rng, data: bytes) -> bytes:
    text = data.decode("utf-8")
    depth = rng.choice([50, 127, 129, 400, 3000])
    kind = rng.choice(["[", "(", "add("])
    close = {"[": "]", "(": ")", "add(": ", x)"}[kind]
    i = text.find("-> ", rng.randrange(len(text)))
    i = i + 3 if i >= 0 else len(text) // 2
    return (text[:i] + kind * depth + "x" + close * depth + " -> " + text[i:]).encode("utf-8")


def invalid_utf8(rng, data: bytes) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x00"]) + data[i:]


def look_alike(rng, data: bytes) -> bytes:
    text = data.decode("utf-8")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(LOOK_ALIKES) + text[i + 1:]
    return text.encode("utf-8")


def line_endings(rng, data: bytes) -> bytes:
    lines = data.split(b"\n")
    return b"".join(line + rng.choice(LINE_ENDINGS + [b"\n"] * 4) for line in lines)


MUTATIONS = [byte_flip, token_edit, truncate, huge_number, deep_nesting, invalid_utf8, look_alike, line_endings]


def front_end(path) -> None:
    """Read, parse and check one file: only a SpecError may come out, and it renders with places."""
    try:
        assembler.check(assembler.resolve.read(path))
    except SpecError as e:
        rendered = e.render()
        assert rendered and all(d.message for d in e.diagnostics)
        assert all(d.filename for d in e.diagnostics)
    except RecursionError:
        pytest.fail("RecursionError")


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_mutants_give_spec_errors_only(mutation, workdir):
    rng = random.Random(mutation.__name__)
    for k in range(max(1, COUNT // len(MUTATIONS))):
        name = rng.choice(sorted(EXAMPLES))
        data = mutation(rng, EXAMPLES[name])
        path = workdir / f"mutant_{mutation.__name__}.net"
        path.write_bytes(data)
        try:
            front_end(path)
        except Exception:  # noqa: BLE001 - the mutant is the report
            pytest.fail(f"{mutation.__name__} #{k} of {name} raised:\n{traceback.format_exc()}\n"
                        f"--- mutant ---\n{data[:3000]!r}")


def test_located_errors_for_encoding_and_nesting(workdir):
    path = workdir / "mutant_utf8.net"
    path.write_bytes(EXAMPLES["source.net"].replace(b"relu", b"rel\xffu", 1))
    with pytest.raises(SpecError) as info:
        assembler.resolve.read(path)
    assert (info.value.line, info.value.column) == (3, 53)
    text = EXAMPLES["source.net"].decode().replace("x -> conv", "x -> conv(" + "[" * 400 + "1" + "]" * 400 + ") -> conv", 1)
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        assembler.check(assembler.resolve.read(path))
    assert info.value.line == 3 and info.value.column > 0 and "more than 128 levels deep" in info.value.message
