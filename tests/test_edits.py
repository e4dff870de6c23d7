"""Properties of the graph edits: function-preserving edits preserve the function, every
result is valid and round-trips through the formatter."""

from __future__ import annotations


import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import assembler
from assembler import edits
from assembler.errors import SpecError
from assembler.testing.checks import assert_compiles, assert_same_function
from assembler.verify import verify

from conftest import SPECS
SOURCE = assembler.load(SPECS / "source.net")
NODES = ["x", "c1", "c2", "c3", "c4"]
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def round_trips(spec):
    text = assembler.format(spec)
    assert assembler.parse(text) == spec
    assert assembler.format(assembler.parse(text)) == text


def randomise_batchnorm(asm):
    with torch.no_grad():
        for m in asm.modules.values():
            for sub in m.modules():
                if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
                    sub.running_mean.uniform_(-0.5, 0.5)
                    sub.running_var.uniform_(0.5, 2.0)


@given(st.sampled_from(["x", "c1", "c2", "c3", "c4"]))
@FAST
def test_identity_adapter_keeps_the_function(after):
    edited = edits.insert_adapter(SOURCE, "cnn", after=after, chain="identity")
    round_trips(edited)
    assert f"{after}_adapter" in edits.bindings(edited, "cnn")
    assert_same_function(SOURCE, edited, "cnn", prepare=randomise_batchnorm)


def test_adapter_is_trainable_and_rewired():
    edited = edits.insert_adapter(SOURCE, "cnn", after="c2", chain="conv(32, 3, pad=1) -> relu", name="h")
    checked = assembler.check(edited)
    net = checked.networks["cnn"]
    assert [n.role for n in net.nodes if n.binding == "h"] == ["adapter", "adapter"]
    assert net.node("c3_0").inputs == ("h",)
    with pytest.raises(SpecError, match="insert_adapter: .*no binding 'c9'"):
        edits.insert_adapter(SOURCE, "cnn", after="c9", chain="identity")
    with pytest.raises(SpecError, match="insert_adapter: the edited spec is not valid"):
        edits.insert_adapter(SOURCE, "cnn", after="c2", chain="gap")  # c3's conv cannot read a vector


@given(st.integers(1, 4), st.data())
@FAST
def test_skips_then_pruning_every_proxy_keeps_the_function(k, data):
    nodes = data.draw(st.lists(st.sampled_from(NODES), min_size=2, max_size=5, unique=True).map(
        lambda xs: sorted(xs, key=NODES.index)))
    skipped = edits.add_skips(SOURCE, "cnn", nodes, k=k)
    round_trips(skipped)
    expanded = assembler.expand(skipped)
    proxies = []
    for st_ in expanded.networks["cnn"].body:
        gate = edits._gate_of(st_) if isinstance(st_, assembler.ir.Binding) else None
        if gate is not None:
            proxies += [f"{st_.name}.in{i}" for i in range(1, len(edits._paths(gate)))]
    pruned, keymap, gates = edits.prune_with_map(skipped, "cnn", proxies)
    verify(assembler.check(pruned))
    assert assembler.format(pruned).split("\ntrain ")[0] == assembler.format(SOURCE).split("\ntrain ")[0]
    assert_same_function(SOURCE, pruned, "cnn", prepare=randomise_batchnorm)


@given(st.data())
@FAST
def test_pruning_zero_weight_paths_keeps_the_function(data):
    skipped = assembler.expand(edits.add_skips(SOURCE, "cnn", NODES, k=3))
    paths = {b.name: len(edits._paths(edits._gate_of(b))) for b in skipped.networks["cnn"].body
             if isinstance(b, assembler.ir.Binding) and edits._gate_of(b) is not None}
    choices = [f"{b}.in{i}" for b, n in paths.items() for i in range(n)]
    removed = data.draw(st.lists(st.sampled_from(choices), unique=True, max_size=6))
    # leave every gate at least one path
    removed = [r for r in removed if sum(x.startswith(r.split(".")[0] + ".") for x in removed) < paths[r.split(".")[0]]]

    def zero_removed(asm):
        randomise_batchnorm(asm)
        with torch.no_grad():
            for r in removed:
                b, i = r.split(".in")
                asm.modules[f"cnn.{b}.gate"].logits[int(i)] = float("-inf")

    pruned, keymap, gates = edits.prune_with_map(skipped, "cnn", removed)
    verify(assembler.check(pruned))
    round_trips(pruned)
    assert_same_function(skipped, pruned, "cnn", keymap=keymap, gates=gates, prepare=zero_removed)


def test_prune_cascades():
    spec = assembler.parse(
        "network n(x: [4, 8, 8]) {\n"
        "    a = x -> conv(4, 1)\n"
        "    b = a -> relu\n"
        "    c = gate(x -> conv(4, 1), b -> identity)\n"
        "    d = gate(c -> relu, a -> relu)\n"
        "    return d\n}\n")
    out = edits.prune(spec, "n", ["a"])  # b dies, c loses a path and collapses, d loses a path too
    text = assembler.format(out)
    assert "a =" not in text and "b =" not in text
    assert "c = x -> conv(4, 1)\n" in text and "d = c -> relu\n" in text
    with pytest.raises(SpecError, match="would remove the output"):
        edits.prune(spec, "n", ["d"])
    with pytest.raises(SpecError, match="names no gate path"):
        edits.prune(spec, "n", ["b.in0"])


def test_freeze_then_a_step_moves_only_trainable_tensors():
    frozen = edits.freeze(SOURCE, "cnn", "c[12]")
    round_trips(frozen)
    asm = assembler.compile(frozen)
    gm = asm["cnn"]
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    opt = torch.optim.SGD(asm.trainable_parameters("cnn"), lr=0.1)
    gm.train()
    torch.nn.functional.cross_entropy(gm(torch.rand(8, 1, 8, 8)), torch.randint(0, 5, (8,))).backward()
    opt.step()
    after = gm.state_dict()
    for k in before:
        if k.startswith(("c1.", "c2.")):
            assert torch.equal(before[k], after[k]), k
        elif k.endswith("weight"):
            assert not torch.equal(before[k], after[k]), k
    back = edits.unfreeze(frozen, "cnn", "*")
    assert assembler.format(back) == assembler.format(SOURCE)


def test_recombine_of_a_network_with_itself_is_the_network():
    rec = edits.recombine(SOURCE, extractor="cnn.c2", head="cnn.logits", name="again")
    round_trips(rec)
    asm = assembler.compile(rec)
    randomise_batchnorm(asm)
    a, b = asm["cnn"], asm["again"]
    a.eval()
    b.eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(a(x), b(x))
    compat = assembler.load(SPECS / "compat.net")
    ab = edits.recombine(compat, extractor="a.f", head="b.y", name="ab2")
    assert "y = x -> a.f -> b.y" in assembler.format(ab)


def test_remove_and_replace():
    spec = edits.insert_adapter(SOURCE, "cnn", after="c3", chain="conv(64, 1) -> relu", name="h")
    back = edits.remove(spec, "cnn", "h")
    assert assembler.format(back) == assembler.format(SOURCE)
    with pytest.raises(SpecError, match="remove: 'c2' turns"):
        edits.remove(SOURCE, "cnn", "c2")
    replaced = edits.replace(SOURCE, "cnn", "c3", "conv(64, 1) -> relu")
    assert "c3 = c2 -> conv(64, 1) -> relu" in assembler.format(replaced)
    with pytest.raises(SpecError, match="replace: the edited spec is not valid"):
        edits.replace(SOURCE, "cnn", "c3", "gap")


def test_compiles_checker():
    asm = assert_compiles(SOURCE)
    assert "cnn" in asm
