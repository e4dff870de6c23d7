"""The op, merge and weighting tables are the one place a construct is defined: every entry
has a lowering, a generator sampler and a picture label, and a new op or merge registered in
one place parses, checks, is generated, compiles and is drawn."""

from __future__ import annotations

import math

import pytest
import torch

import assembler
from assembler import draw, lowerings, matching
from assembler.ops import Arg, Merge, Op, OpError, merges, ops, register_op, unregister_op
from assembler.signature import positive
from assembler.testing import assert_valid, strategies
from assembler.testing.checks import assert_compiles
from assembler.weightings import WEIGHTINGS


@pytest.mark.parametrize("name", sorted(ops()) + sorted(merges()))
def test_every_op_and_merge_is_complete(name):
    op = ops().get(name) or merges()[name]
    assert name in lowerings.LOWERINGS, f"'{name}' has no lowering (assembler.lowerings.register_lowering)"
    low = lowerings.LOWERINGS[name]
    assert (low.module is not None) == op.module, f"'{name}': a module op needs a module lowering and only it"
    assert op.sample is not None, f"'{name}' has no generator sampler (Op.sample)"
    assert op.label is not None, f"'{name}' has no picture label (Op.label)"
    assert op.doc, f"'{name}' has no doc"


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_weighting_has_an_edge_module(name):
    assert name in matching.EDGES, f"weighting '{name}' has no edge module (assembler.matching.register_edge)"


def test_the_generator_signatures_are_the_table():
    assert set(strategies.SIGNATURES) == set(ops())
    assert strategies.SIGNATURES["conv"][:2] == (("out", strategies.SIGNATURES["conv"][0][1]),
                                                 ("k", strategies.SIGNATURES["conv"][1][1]))


# ---------------------------------------------------------------------------------------------
# A toy op and a toy merge, each defined in one place


def _scale_infer(s, a):
    if a["factor"] == 0:
        raise OpError("'scale' by 0 leaves nothing", arg="factor")
    return s


def _maxof(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


def _maxof_infer(shapes, a):
    for i, s in enumerate(shapes[1:], 1):
        if s != shapes[0]:
            raise OpError(f"'maxof' of unequal shapes {list(shapes[0])} and {list(s)}", path=i)
    return shapes[0]


SCALE = Op("scale", (Arg("factor", float, check=positive),), _scale_infer,
           lambda s, a, o: (0, math.prod(s)), "multiply by a constant", label=lambda a: f"×{a['factor']:g}",
           sample=lambda s, c, preserve: {"factor": c.pick([2.0, 0.5])})
MAXOF = Merge("maxof", (), _maxof_infer, lambda shapes, a, o: (0, (len(shapes) - 1) * math.prod(o)),
              "element-wise maximum", label="maxof", sample=lambda n, s, c: {})


@pytest.fixture
def toys():
    register_op(SCALE)
    lowerings.register_lowering("scale", function=lambda n, xs: (torch.mul, (xs[0], n.args["factor"]), {}))
    register_op(MAXOF)
    lowerings.register_lowering("maxof", function=lambda n, xs: (_maxof, tuple(xs), {}))
    yield
    for name in ("scale", "maxof"):
        unregister_op(name)
        lowerings.LOWERINGS.pop(name)


TOY_SPEC = """\
network n(x: [2, 4, 4]) {
    a = x -> scale(2) -> relu
    b = maxof(a, x -> scale(factor=0.5))
    return b
}
"""


def test_a_toy_op_and_merge_parse_check_compile_and_draw(toys):
    spec = assembler.parse(TOY_SPEC, "toy.net")
    checked = assembler.check(spec)
    assert checked.networks["n"].shape("b") == (2, 4, 4)
    assert checked.flops("n") == 32 + 32 + 32 + 32  # scale, relu, scale, maxof
    gm = assembler.compile(spec, imports=False)["n"]
    x = torch.randn(3, 2, 4, 4)
    assert torch.equal(gm(x), torch.maximum(torch.relu(x * 2), x * 0.5))
    svg = draw.to_svg(checked, ["n"])
    assert "×2 → relu" in svg and "maxof(2)" in svg
    assert assembler.format(spec) == TOY_SPEC


def test_a_toy_op_reports_errors_like_the_built_ins(toys):
    bad = "network n(x: [2, 4, 4]) {\n    a = x -> scale(0) -> relu\n    return a\n}\n"
    with pytest.raises(assembler.SpecError) as e:
        assembler.check(assembler.parse(bad, "bad.net"))
    assert e.value.render().splitlines()[0] == "bad.net:2:20: error: argument 'factor' of 'scale' must be positive, got 0.0"


def test_the_generator_draws_the_toy_op_and_merge(toys):
    found = set()
    for seed in range(300):
        spec, shapes = strategies.random_spec(seed, max_networks=1, max_bindings=6)
        text = assembler.format(spec)
        uses = {name for name in ("scale", "maxof") if f"{name}(" in text or f"-> {name}" in text}
        if uses - found:
            checked = assert_valid(spec)
            for net, tracked in shapes.items():
                for name, shape in tracked.items():
                    assert checked.networks[net].shape(name) == shape
            assert_compiles(spec)
            found |= uses
        if found == {"scale", "maxof"}:
            return
    pytest.fail(f"300 generated specs used only {sorted(found)} of the toy op and merge")
