"""The parser's fast path (fastparse.py) against the full parser (Lark): on every text it
either steps aside (`Fallback`) or builds exactly what Lark builds, spans and comments
included; on valid specs it never steps aside."""

from __future__ import annotations

import random

import pytest
from hypothesis import given

import assembler
from assembler import fastparse, ir, parser
from assembler.errors import SpecError
from assembler.testing import strategies

from conftest import FAST, GOLDEN, SHARED, SPECS
from test_fuzz import EXAMPLE_TOKENS, POOL, POOL_BY_KIND, _kind

FILES = sorted(SPECS.glob("*.net")) + sorted(SHARED.glob("*.net")) + sorted(GOLDEN.rglob("*.net"))


def dump(x):
    """Everything of an IR value, spans included (spans never decide `==`)."""
    if isinstance(x, ir.Span):
        return ("Span", x.file, x.line, x.column, x.end_line, x.end_column)
    if isinstance(x, (ir.Node, ir.Comment)):
        return (type(x).__name__,) + tuple((k, dump(getattr(x, k))) for k in type(x).model_fields)
    if isinstance(x, (tuple, list)):
        return tuple(dump(i) for i in x)
    return (type(x).__name__, x)


def same_as_lark(text: str, name: str = "t.net") -> bool:
    """True when the fast path parsed the text (as Lark does); False when it stepped aside
    (and Lark must reject the text or parse it the same)."""
    try:
        slow, slow_comments = parser._parse_with_lark(text, name)
    except SpecError:
        slow = None
    try:
        fast, fast_comments = fastparse.parse(text, name)
    except fastparse.Fallback:
        return False
    assert slow is not None, f"the fast path accepted a text Lark rejects:\n{text}"
    assert dump(fast) == dump(slow), text
    assert dump(fast_comments) == dump(slow_comments), text
    return True


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_spec_files(path):
    text = path.read_text(encoding="utf-8", errors="replace").removeprefix("\ufeff")
    parsed = same_as_lark(text, path.name)
    try:
        parser._parse_with_lark(text, path.name)
    except SpecError:
        return
    assert parsed, f"{path.name} is valid but the fast path stepped aside"


@FAST
@given(strategies.specs(max_networks=2, max_bindings=5))
def test_generated_specs(spec):
    assert same_as_lark(assembler.format(spec))


_LAYOUT = ["\n", "\r\n", "\n\n", "  # c\n", "\n    -> ", "\t", "\f", "(", ")", "[", "]"]


def _mutant(rng: random.Random, tokens: list[str]) -> str:
    toks = list(tokens)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(toks))
        how = rng.choice(["retype", "retype", "delete", "duplicate", "replace", "layout"])
        if how == "retype":
            toks[i] = rng.choice(POOL_BY_KIND.get(_kind(toks[i]), POOL))
        elif how == "delete":
            del toks[i]
        elif how == "duplicate":
            toks[i:i] = [toks[i], " "]
        elif how == "replace":
            toks[i] = rng.choice(POOL)
        else:
            toks[i:i] = [rng.choice(_LAYOUT)]
    return "".join(toks)


def test_mutated_examples():
    rng = random.Random(0)
    parsed = 0
    for _ in range(400):
        tokens = EXAMPLE_TOKENS[rng.choice(sorted(EXAMPLE_TOKENS))]
        parsed += same_as_lark(_mutant(rng, tokens))
    assert parsed > 50  # many mutants are still valid, and take the fast path


@pytest.mark.parametrize("text", [
    'network n(x: [1, 8, 8]) {\r\n  y = (x -> relu)\r\n  z = ((y)) -> a.b..c -> frozen copy(p.q)\r\n  return z\r\n}\r\n',
    "network n(x: [1]) {\n  y = x  # a\n      # b\n\n    -> relu  # c\n  return y }",
    'block f(c, s=1) {\n a = in -> conv(c, 3, stride=s)\n return a\n}\nshared h = frozen relu -> trainable tanh\n',
    "match [a.b, c.d] * [e.f] : meta(hidden=3)\nmatch a.b -> c.d, e.f\n -> g.h : l2\n",
    'train a, b {\n epochs = 3\n data = [digits("train", classes=[1,2]), npz("a\\tb")]\n\n seed = -1\n}\n',
    'use "a.net" as in\nnetwork in(x: [1]) {\n in = x -> f(in, true, false, [], [[1]], "", 1e-3, .5, +2, 3.)\n return in\n}',
    "", "\n\n# only a comment\n", "network n(x:[1]){\ny=add(x,\n x)\n\n\nreturn y}\n\n\n# end\n",
], ids=range(9))
def test_layouts_and_corners(text):
    assert same_as_lark(text)


def test_deep_parentheses_step_aside_and_parse():
    text = "network n(x: [1]) {\n    y = " + "(" * 2000 + "x" + ")" * 2000 + "\n    return y\n}\n"
    spec = assembler.parse(text, "deep.net")
    assert spec.networks["n"].body[0].chain.source == ir.Ref(parts=("x",))
