"""Fuzzing the front end: whatever the text, `assembler.parse` then `assembler.check` either
succeed or raise `assembler.SpecError`, and the error renders. Anything else (a Python
exception from inside the parser or checker) is a bug.

Inputs: (a) random text over the language's characters plus junk, (b) sequences of language
tokens, (c) token-level mutations of the example specs in specs/digits, (d) chains of built-in
ops with arbitrary arguments, (e) mutations of valid generated specs, (f) templates and shared
modules that use each other, (g) deep nesting. The runs are deterministic (`derandomize=True`)
and take about half a minute in all.

(f) and (g) start with the minimal inputs that once raised RecursionError (now located
errors), as explicit examples.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import assembler
from lark.exceptions import VisitError

from assembler.errors import SpecError
from assembler.ops import ops
from assembler.parser import KEYWORDS

from conftest import SPECS
EXAMPLES = {p.name: p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*.net"))}


def fuzz_settings(n: int, shrink: bool = True):
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


class Recursion(AssertionError):
    """A RecursionError, re-raised from one place so that Hypothesis sees one failure (the
    original's innermost frame varies with the input, which Hypothesis would call flaky)."""


def front_end(text: str, filename: str = "<fuzz>") -> None:
    """Parse and check; a SpecError is a fine answer, and it must render."""
    recursed = False
    try:
        spec = assembler.parse(text, filename)
        assembler.check(spec)
    except RecursionError:
        recursed = True
    except VisitError as e:  # lark wraps what a transformer callback raises
        if not isinstance(e.orig_exc, RecursionError):
            raise
        recursed = True
    except SpecError as e:
        rendered = e.render()
        assert isinstance(rendered, str) and rendered
        assert e.diagnostics and all(d.message for d in e.diagnostics)
        assert str(e) == rendered
    if recursed:
        raise Recursion("RecursionError: maximum recursion depth exceeded")


def front_end_file(text: str, folder: Path, name: str = "mutant.net") -> None:
    """As `front_end`, for a spec that lives in `folder` (next to the example files)."""
    path = folder / name
    path.write_text(text, encoding="utf-8", newline="")
    front_end(text, str(path))


# ---------------------------------------------------------------------------------------------
# Vocabulary

OPS = sorted(ops())
NAMES = ["x", "y", "c1", "c2", "c3", "c4", "f", "h", "n", "a", "b", "net", "pre", "src", "cnn", "teacher",
         "student", "head", "rot", "logits", "digits", "finetune", "nettailor", "sgd", "adam", "epochs",
         "batch", "seed", "data", "procedure", "optimizer", "l2", "meta", "fitnet", "k", "dim", "init"]
PUNCT = ["->", "..", "(", ")", "[", "]", "{", "}", "=", ",", ":", ".", "*", "#"]
VALUES = ["0", "1", "2", "3", "8", "16", "-1", "1.5", "0.5", "1e-3", "1e400", '"train"', '"a"', '"source.net"',
          '"mutant.net"', '"nope.net"', '""', "true", "false"]
JUNK = ["$", "@", "!", "?", ";", "'", "\\", "\t", "\r", "\f", "\x00", "é", "\u2028", "\ufeff", '"', "->->", "...", "-"]
TOKENS = sorted(KEYWORDS) + OPS + ["add", "mul", "cat", "gate", "copy"] + NAMES + PUNCT + VALUES + JUNK + ["\n"]

ALPHABET = "abcdefghijklmnopqrstuvwxyz_ABCXYZ0123456789 \n\t()[]{}=,.:*-># \"+e" + "$@!;'\\\r\f\x00é"

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\f]+) | (?P<nl>\r?\n) | (?P<comment>\#[^\n]*) | (?P<string>"(?:[^"\\\r\n]|\\.)*")
  | (?P<arrow>->) | (?P<dots>\.\.) | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*) | (?P<other>.)
""", re.X | re.S)


def tokenize(text: str) -> list[str]:
    """Text -> tokens whose concatenation is the text (whitespace kept as tokens)."""
    return [m.group() for m in _TOKEN.finditer(text)]


EXAMPLE_TOKENS = {name: tokenize(text) for name, text in EXAMPLES.items()}
assert all("".join(t) == EXAMPLES[n] for n, t in EXAMPLE_TOKENS.items())
POOL = sorted({t for toks in EXAMPLE_TOKENS.values() for t in toks if not t.isspace()} | set(TOKENS))


def _kind(tok: str) -> str:
    m = _TOKEN.fullmatch(tok)
    return m.lastgroup if m else "other"


POOL_BY_KIND: dict[str, list[str]] = {}
for _t in POOL:
    POOL_BY_KIND.setdefault(_kind(_t), []).append(_t)


@st.composite
def mutated(draw, tokens: list[str], max_edits: int = 4) -> str:
    """Delete, duplicate, swap, replace or insert tokens (whitespace stays where it was).

    `retype` replaces a name by a name, a number by a number, a string by a string: such
    mutants mostly still parse, so they reach the checker."""
    toks = list(tokens)
    for _ in range(draw(st.integers(1, max_edits))):
        sig = [i for i, t in enumerate(toks) if not t.isspace() or "\n" in t]
        how = draw(st.sampled_from(["retype", "retype", "retype", "delete", "duplicate", "swap", "replace",
                                    "insert"]))
        if not sig:
            how = "insert"
        i = draw(st.sampled_from(sig)) if sig else 0
        if how == "retype":
            same = POOL_BY_KIND.get(_kind(toks[i]), POOL)
            toks[i] = draw(st.sampled_from(same))
        elif how == "delete":
            del toks[i]
        elif how == "duplicate":
            toks[i:i] = [toks[i], " "]
        elif how == "swap":
            j = draw(st.sampled_from(sig))
            toks[i], toks[j] = toks[j], toks[i]
        elif how == "replace":
            toks[i] = draw(st.sampled_from(POOL))
        else:
            toks[i:i] = [draw(st.sampled_from(POOL)), " "]
    return "".join(toks)


# ---------------------------------------------------------------------------------------------
# (a) random text, (b) token sequences


@fuzz_settings(500)
@given(st.text(alphabet=ALPHABET, max_size=200))
@example("network n(x: [1, 8, 8]) {\n    y = " + "(" * 100 + "x" + ")" * 100 + "\n    return y\n}\n")
def test_random_text(text):
    front_end(text)


@fuzz_settings(400)
@given(st.lists(st.sampled_from(TOKENS), max_size=80), st.sampled_from([" ", "  ", "\n"]))
def test_token_sequences(tokens, sep):
    front_end(sep.join(tokens))


# Token soup that starts like a statement gets further into the grammar.
_PREFIXES = ["network n(x: [1, 8, 8]) {\n    y = x -> ", "block b(c, s=1) = ", "shared h = ",
             "network n(x: [1, 8, 8]) {\n", "train n {\n    ", "match ", 'use "source.net" as pre\n']


@fuzz_settings(300)
@given(prefix=st.sampled_from(_PREFIXES), tokens=st.lists(st.sampled_from(TOKENS), max_size=40),
       close=st.booleans())
def test_token_sequences_after_a_prefix(prefix, tokens, close, workdir):
    text = prefix + " ".join(tokens) + ("\n}\n" if close else "\n")
    front_end_file(text, workdir)


# ---------------------------------------------------------------------------------------------
# (c) mutations of the example specs


@fuzz_settings(800)
@given(data=st.data())
def test_mutated_examples(data, workdir):
    name = data.draw(st.sampled_from(sorted(EXAMPLES)), label="example")
    text = data.draw(mutated(EXAMPLE_TOKENS[name], max_edits=3), label="mutant")
    front_end_file(text, workdir)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_check(name, workdir):
    """Unmutated, every example checks (so mutants start from valid specs)."""
    spec = assembler.parse(EXAMPLES[name], str(workdir / name))
    assembler.check(spec)


# ---------------------------------------------------------------------------------------------
# (d) chains of built-in ops with arbitrary arguments


_VALUES = st.one_of(
    st.integers(-3, 40), st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.5, 1e-3, 1e30]), st.booleans(),
    st.sampled_from(['"nearest"', '"bilinear"', '"x"']), st.just("[1, 2]"), st.just("[]"),
    st.sampled_from(["c", "x", "in"]),
)


def _literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_KEYS = sorted({a.name for op in ops().values() for a in op.args} | {"dim", "init", "bogus"})


_GOOD = {int: st.integers(1, 4), float: st.sampled_from([0.0, 0.25, 0.5]), bool: st.booleans(),
         str: st.sampled_from(['"nearest"', '"bilinear"'])}


@st.composite
def calls(draw) -> str:
    """An op call: mostly with arguments of the right kinds, else anything."""
    name = draw(st.sampled_from(OPS + ["add", "copy", "relux", "t"]))
    op = ops().get(name)
    if op is not None and draw(st.integers(0, 3)) > 0:
        args = []
        for a in op.args:  # required arguments come first: positional; the others by name
            kind = a.kind if isinstance(a.kind, type) else a.kind[0]
            if a.required:
                args.append(_literal(draw(_GOOD[kind])))
            elif draw(st.integers(0, 2)) == 0:
                args.append(f"{a.name}={_literal(draw(_GOOD[kind]))}")
        return f"{name}({', '.join(args)})" if args or draw(st.booleans()) else name
    if draw(st.integers(0, 3)) == 0:
        return name
    pos = [_literal(draw(_VALUES)) for _ in range(draw(st.integers(0, 4)))]
    kw = [f"{draw(st.sampled_from(_KEYS))}={_literal(draw(_VALUES))}" for _ in range(draw(st.integers(0, 2)))]
    return f"{name}({', '.join(pos + kw)})"


@st.composite
def op_chains(draw) -> str:
    shape = draw(st.sampled_from(["[1, 8, 8]", "[3, 5, 7]", "[16]", "[2, 1, 1]", "[4, 3]"]))
    lines = []
    names = ["x"]
    for i in range(draw(st.integers(1, 4))):
        src = draw(st.sampled_from(names))
        if draw(st.integers(0, 4)) == 0 and len(names) > 1:
            merge = draw(st.sampled_from(["add", "mul", "cat", "gate"]))
            extra = draw(st.sampled_from(["", ", dim=1", ", dim=-1", ", init=[1, 2]", ", init=[1]"]))
            src = f"{merge}({', '.join(draw(st.permutations(names))[:2])}{extra})"
        chain = " -> ".join([src] + [draw(calls()) for _ in range(draw(st.integers(1, 4)))])
        lines.append(f"    b{i} = {chain}")
        names.append(f"b{i}")
    block = "block t(c, s=1) = conv(c, 3, stride=s, pad=1) -> relu\n"
    return f"{block}network n(x: {shape}) {{\n" + "\n".join(lines) + f"\n    return {names[-1]}\n}}\n"


@fuzz_settings(300)
@given(op_chains())
def test_op_chains(text):
    front_end(text)


# ---------------------------------------------------------------------------------------------
# (e) mutations of valid generated specs


@fuzz_settings(120)
@given(st.data())
def test_mutated_generated_specs(data):
    from assembler.testing import strategies as sst
    spec = data.draw(sst.specs(max_networks=2, max_bindings=5), label="spec")
    text = assembler.format(spec)
    front_end(text)  # valid as generated
    front_end(data.draw(mutated(tokenize(text), max_edits=3), label="mutant"))


# ---------------------------------------------------------------------------------------------
# (f) templates and shared modules that use each other


_DEFS = ["t0", "t1", "s0", "s1"]
_LEAVES = ["relu", "conv(4, 3, pad=1)", "batchnorm", "maxpool(2)", "gap", "linear(3)", "identity"]


@st.composite
def definition_graphs(draw) -> str:
    """Templates t0, t1 and shared modules s0, s1 whose pipes name ops and each other."""
    element = st.sampled_from(_LEAVES + _DEFS + ["frozen s0", "trainable t1", "copy(a.y)"])
    lines = []
    for name in _DEFS:
        pipe = " -> ".join(draw(st.lists(element, min_size=1, max_size=3)))
        lines.append(f"{'block' if name[0] == 't' else draw(st.sampled_from(['shared', 'frozen shared']))} "
                     f"{name} = {pipe}")
    lines.append("network a(x: [2, 8, 8]) {\n    y = x -> relu\n    return y\n}")
    used = " -> ".join(draw(st.lists(st.sampled_from(_DEFS + _LEAVES[:4]), min_size=1, max_size=3)))
    lines.append(f"network n(x: [2, 8, 8]) {{\n    y = x -> {used}\n    return y\n}}")
    return "\n".join(draw(st.permutations(lines))) + "\n"


@fuzz_settings(150, shrink=False)  # the minimal failing input found by shrinking comes first:
@given(definition_graphs())
@example("shared s0 = s0\nnetwork n(x: [2, 8, 8]) {\n    y = x -> s0\n    return y\n}\n")
def test_definition_graphs(text):
    front_end(text)


# ---------------------------------------------------------------------------------------------
# (g) deep nesting


@st.composite
def nested(draw) -> str:
    # depths well away from where Python's recursion limit bites (some 300-400 levels of lists
    # or merges today), so that a failure does not depend on how deep the test's own stack is
    depth = draw(st.sampled_from([1, 2, 10, 50, 100, 150, 2000]))
    kind = draw(st.sampled_from(["parens", "list", "merge"]))
    if kind == "parens":
        body = "(" * depth + "x" + ")" * depth
    elif kind == "list":
        body = "x -> conv(" + "[" * depth + "1" + "]" * depth + ", 3)"
    else:
        body = "add(" * depth + "x" + ", x)" * depth
    return f"network n(x: [1, 8, 8]) {{\n    y = {body}\n    return y\n}}\n"


@fuzz_settings(30, shrink=False)  # the minimal failing input found by shrinking comes first:
@given(nested())
@example("network n(x: [1, 8, 8]) {\n    y = x -> conv(" + "[" * 2000 + "1" + "]" * 2000 + ", 3)\n    return y\n}\n")
def test_deep_nesting(text):
    front_end(text)


# ---------------------------------------------------------------------------------------------
# (h) paths in `use`


_PATH_PIECES = ["source.net", "tailor.net", "mutant.net", "spec.net", "nope.net", ".", "..", "/", "~", "é",
                "\\\\", "\\t", "\\x00", "\\ud800", "a" * 300]


@settings(max_examples=200, deadline=None, derandomize=True, database=None, report_multiple_bugs=False)
@given(pieces=st.lists(st.sampled_from(_PATH_PIECES), max_size=4))
@example(pieces=["\\x00"])
def test_use_paths(pieces, workdir):
    path = "".join(pieces)
    front_end_file(f'use "{path}" as p\nnetwork n(x: [1, 8, 8]) {{\n    y = x -> p.c1\n    return y\n}}\n',
                   workdir)
