"""The spec strategies of `assembler.testing`: every drawn spec checks, round-trips through
format/parse, formats idempotently, and has the shapes the strategies tracked; the strategies
reach every construct they claim to. Also: reproductions of the checker bugs the strategies
steer around (`strategies.AVOIDED`) and of a printer/parser bug, as strict xfails."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

import assembler
from assembler import ir
from assembler.testing import assert_round_trips, assert_valid, networks, specs, specs_with_shapes, strategies

# Drawing a spec costs about 30 ms of CPU (Hypothesis' bookkeeping, mostly), checking 5 ms
# and parsing 10 ms: these budgets keep the whole file well under 20 s.
from conftest import FAST


def assert_tracked_shapes(spec: ir.Spec, shapes: dict) -> None:
    """`spec` checks; the checker's shapes are the tracked ones; its graphs are well formed."""
    checked = assert_valid(spec)
    assert set(checked.networks) == set(shapes)
    for net, tracked in shapes.items():
        cn = checked.networks[net]
        assert set(cn.bindings) == set(tracked), net
        for name, shape in tracked.items():
            assert cn.shape(name) == shape, f"{net}.{name}: tracked {shape}, checked {cn.shape(name)}"
        # every node reads existing nodes; every module matches the op and input shape of its nodes
        names = {n.name for n in cn.nodes}
        assert set(cn.bindings.values()) <= names
        for node in cn.nodes:
            assert set(node.inputs) <= names, (net, node.name, node.inputs)
            if node.module:
                module = checked.modules[node.module]
                assert module.op == node.op, (net, node.name, node.module)
                assert module.in_shape == cn.node(node.inputs[0]).shape, (net, node.name, node.module)


@FAST
@given(specs_with_shapes())
def test_drawn_specs_check_with_the_tracked_shapes(pair):
    assert_tracked_shapes(*pair)


@FAST
@given(specs())
def test_drawn_specs_round_trip_and_format_idempotently(spec):
    assert_round_trips(spec)  # parse(format(spec)) == spec, and format(parse(format(spec))) == format(spec)


@FAST
@given(specs())
def test_drawn_specs_wrapped_narrow_round_trip(spec):
    """At 24 columns nearly every statement wraps, at every kind of break (commas in calls and
    lists, arrows at depth 0 and inside arguments): the meaning and idempotence hold."""
    from assembler import printer
    old, printer.WIDTH = printer.WIDTH, 24
    try:
        assert_round_trips(spec)
    finally:
        printer.WIDTH = old


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(max_bindings=5))
def test_networks_draws_one_network(spec):
    assert len(spec.networks) == 1
    assert_valid(spec)
    assert_round_trips(spec)


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        strategies.random_spec(0, min_networks=2, max_networks=1)
    with pytest.raises(ValueError):
        strategies.random_spec(0, max_bindings=0)


def test_random_spec_is_deterministic():
    assert strategies.random_spec(7) == strategies.random_spec(7)


# ---------------------------------------------------------------------------------------------
# Coverage: the strategies reach every construct they promise.


def features(spec: ir.Spec) -> set[str]:
    """The constructs a spec uses, by name."""
    out: set[str] = set()
    nets = spec.networks
    order = [i.name for i in spec.items if isinstance(i, ir.Network)]
    shared_users: dict[str, set[str]] = {}

    def walk(e, net: str | None):
        if isinstance(e, ir.Chain):
            if e.source is not None:
                walk(e.source, net)
            for el in e.elements:
                if el.modifier:
                    out.add(f"element:{el.modifier}")
                walk(el.target, net)
        elif isinstance(e, ir.Call):
            name = e.ref.dotted
            if name in ("add", "mul", "gate", "cat"):
                out.add(f"merge:{name}")
                kw = {a.name for a in e.args if a.name}
                if name == "gate":
                    out.add("gate:init" if "init" in kw else "gate:default")
                if name == "cat" and "dim" in kw:
                    out.add("cat:dim")
                for a in e.args:
                    if isinstance(a.value, ir.Call) or isinstance(a.value, ir.Chain) and isinstance(a.value.source,
                                                                                                    ir.Call):
                        out.add("merge:nested")
                    walk(a.value, net)
            elif name == "copy":
                out.add("copy:range" if isinstance(e.args[0].value, ir.Range) else "copy")
                walk(e.args[0].value, net)
            else:
                walk(e.ref, net)
                if any(isinstance(a.value, ir.Ref) for a in e.args):
                    out.add("param-argument")
        elif isinstance(e, ir.Range):
            out.add("range")
            walk(e.start, net)
        elif isinstance(e, ir.Ref):
            if len(e.parts) == 2 and e.parts[0] in nets:
                out.add("reference" if net else "reference:in-definition")
                if net and order.index(e.parts[0]) > order.index(net):
                    out.add("forward-reference")
            elif e.parts[0] in strategies.SIGNATURES:
                out.add(f"op:{e.parts[0]}")
            elif e.parts[0] in spec.blocks:
                out.add("template-instance")
            elif e.parts[0] in spec.shared and net:
                shared_users.setdefault(e.parts[0], set()).add(net)
        elif isinstance(e, ir.In):
            out.add("in")

    seen_network = False
    for item in spec.items:
        if isinstance(item, (ir.Block, ir.Shared)) and seen_network:
            out.add("definition-after-use")
        seen_network = seen_network or isinstance(item, ir.Network)
        if isinstance(item, ir.Block):
            out.add("template:pipe" if item.pipe is not None else "template:body")
            if any(p.default is not None for p in item.params):
                out.add("template:default")
            for c in [item.pipe] if item.pipe is not None else [s.chain for s in item.body if
                                                                 isinstance(s, ir.Binding)]:
                walk(c, None)
        elif isinstance(item, ir.Shared):
            out.add("shared:frozen" if item.frozen else "shared")
            walk(item.pipe, None)
        elif isinstance(item, ir.Network):
            if any(len(i.shape) == 1 for i in item.inputs):
                out.add("input:vector")
            if any(len(i.shape) == 3 for i in item.inputs):
                out.add("input:image")
            if len(item.inputs) > 1:
                out.add("inputs:2")
            for stmt in item.body:
                if isinstance(stmt, ir.Binding):
                    if stmt.modifier:
                        out.add(f"binding:{stmt.modifier}")
                    walk(stmt.chain, item.name)
                elif isinstance(stmt, ir.Skips):
                    out.add("skips")
                    out.update(f"skips:{a.name}" for a in stmt.args)
                elif isinstance(stmt, ir.Return):
                    out.add(f"return:{len(stmt.names)}")
        elif isinstance(item, ir.Match):
            out.add("match")
        elif isinstance(item, ir.Train):
            out.add("train")
    if len(nets) > 1:
        out.add("networks:several")
    # a shared module used by two networks (directly or through a template they instantiate)
    if any(len(users) > 1 for users in shared_users.values()):
        out.add("shared:two-networks")
    return out


EXPECTED = {
    "template:pipe", "template:body", "template:default", "template-instance", "param-argument", "in",
    "shared", "shared:frozen", "shared:two-networks", "reference", "forward-reference", "copy", "copy:range",
    "range", "skips", "skips:k", "skips:proxy", "merge:add", "merge:mul", "merge:gate", "merge:cat",
    "merge:nested", "gate:init", "gate:default", "cat:dim", "binding:frozen", "binding:trainable",
    "binding:adapter", "element:frozen", "element:trainable", "input:vector", "input:image", "inputs:2",
    "return:1", "return:2", "match", "train", "networks:several", "reference:in-definition",
    "definition-after-use",
} | {f"op:{name}" for name in strategies.SIGNATURES}


CORPUS = 200  # seeds of `random_spec`: the same generator as the strategies, without Hypothesis


def test_a_seeded_corpus_reaches_every_construct_and_checks():
    """Hypothesis' draws are correlated, so coverage is measured on independent seeded specs."""
    seen: Counter[str] = Counter()
    for seed in range(CORPUS):
        spec, shapes = strategies.random_spec(seed)
        seen.update(features(spec))
        assert_tracked_shapes(spec, shapes)
    assert EXPECTED - set(seen) == set()


# ---------------------------------------------------------------------------------------------
# Checker bugs the strategies steer around (strategies.AVOIDED). Each is strict: when the bug
# is fixed the test turns into an unexpected pass, and the AVOIDED entry should go.


RETURN_READ_LATER = """\
block f {
    a = in -> relu
    b = a -> relu
    return a
}

network n(x: [4]) {
    y = x -> f
    return y
}
"""

# The same bug through an alias of `in`: keep's result is the tanh node, which 'a' reads.
RETURN_IN_READ_INSIDE = """\
block keep {
    a = in -> relu
    b = in
    return b
}

network n(x: [4]) {
    y = x -> tanh -> keep
    return y
}
"""


def _dangling(checked) -> list:
    net = checked.networks["n"]
    names = {n.name for n in net.nodes}
    return [(n.name, n.inputs) for n in net.nodes if not set(n.inputs) <= names]


def test_template_returning_a_binding_read_later_keeps_the_graph_linked():
    assert _dangling(assert_valid(assembler.parse(RETURN_READ_LATER))) == []


def test_template_returning_an_alias_of_its_input_keeps_the_graph_linked():
    assert _dangling(assert_valid(assembler.parse(RETURN_IN_READ_INSIDE))) == []


def test_reference_to_a_binding_whose_template_returns_a_binding_read_later():
    assert_valid(assembler.parse(RETURN_READ_LATER + "\nnetwork m(x: [4]) {\n    z = x -> n.y\n    return z\n}\n"))


def test_range_over_a_binding_whose_template_returns_a_binding_read_later():
    assert_valid(assembler.parse(RETURN_READ_LATER + "\nnetwork m(x: [4]) {\n    z = x -> n.y..y\n    return z\n}\n"))


COPY_OF_SHARED = """\
shared sh = linear(5)

network o(x: [4]) {
    h = x -> linear(6) -> sh
    return h
}

network n(x: [4]) {
    y = x -> copy(o.h)
    return y
}
"""


def test_copy_of_a_binding_that_uses_a_shared_module_keeps_distinct_modules():
    checked = assert_valid(assembler.parse(COPY_OF_SHARED))
    net = checked.networks["n"]
    for node in net.nodes:
        if node.module:
            module = checked.modules[node.module]
            assert module.in_shape == net.node(node.inputs[0]).shape, (node.name, node.module, module)


NETWORK_O = "network o(x: [4]) {\n    h = x -> linear(4)\n    return h\n}\n"


def test_template_referring_to_a_network_defined_later():
    text = "block f = o.h -> relu\n\nnetwork n(x: [4]) {\n    y = x -> f\n    return y\n}\n\n" + NETWORK_O
    assert_valid(assembler.parse(text))


def test_shared_module_referring_to_a_network_defined_later():
    text = "shared s = o.h -> relu\n\nnetwork n(x: [4]) {\n    y = x -> s\n    return y\n}\n\n" + NETWORK_O
    assert_valid(assembler.parse(text))


def test_the_same_specs_check_in_dependency_order():
    """The same specs in dependency order check too."""
    for head in ("block f = o.h -> relu", "shared s = o.h -> relu"):
        use = "f" if head.startswith("block") else "s"
        assert_valid(assembler.parse(f"{head}\n\n{NETWORK_O}\nnetwork n(x: [4]) {{\n    y = x -> {use}\n"
                                     "    return y\n}\n"))


def test_string_with_a_nul_and_a_backslash_round_trips():
    assert_round_trips(ir.Spec(items=(ir.Use(path="a\x00\\b", alias="p"),)))


# ---------------------------------------------------------------------------------------------
# The checkers themselves


def test_assert_valid_reports_the_errors_and_the_text():
    spec = assembler.parse("network n(x: [4]) {\n    y = x -> conv(4, 3)\n    return y\n}\n")
    with pytest.raises(AssertionError, match=r"does not check(.|\n)*conv(.|\n)*--- spec ---"):
        assert_valid(spec)


def test_assert_round_trips_reports_a_difference():
    # A float spelled as an int prints as "2" and parses back as the int 2: not the same IR.
    y = ir.Binding(name="y", chain=ir.Chain(source=ir.Ref(parts=("x",)), elements=(
        ir.Element(target=ir.Call(ref=ir.Ref(parts=("dropout",)), args=(
            ir.Arg(value=ir.Number(value=0.5, text="1")),))),)))
    spec = ir.Spec(items=(ir.Network(name="n", inputs=(ir.Input(name="x", shape=(4,)),),
                                     body=(y, ir.Return(names=("y",)))),))
    with pytest.raises(AssertionError, match="parse\\(format\\(spec\\)\\) != spec"):
        assert_round_trips(spec)
