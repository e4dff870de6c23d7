"""The compiler against hand-written PyTorch: equal outputs and gradients, frozen and shared
semantics, taps, seeds and checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

import assembler
from assembler.errors import CheckpointError

from conftest import SPECS


class HandCNN(nn.Module):
    """source.net's network, written by hand."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout))

        self.b1, self.b2, self.b3, self.b4 = block(1, 16), block(16, 32), block(32, 64), block(64, 64)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        x = torch.relu(self.b1(x))
        x = nn.functional.max_pool2d(torch.relu(self.b2(x)), 2)
        x = torch.relu(self.b3(x))
        x = nn.functional.max_pool2d(torch.relu(self.b4(x)), 2)
        return self.fc(x.mean((2, 3)))


def _copy_into(hand: HandCNN, gm) -> None:
    sd = gm.state_dict()
    mapping = {"b1": "c1", "b2": "c2", "b3": "c3", "b4": "c4"}
    new = {}
    for k in hand.state_dict():
        head, rest = k.split(".", 1)
        new[k] = sd[f"{mapping[head]}.{rest}"] if head in mapping else sd[f"logits.1.{rest}"]
    hand.load_state_dict(new)


@pytest.fixture(scope="module")
def source():
    return assembler.load(SPECS / "source.net")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_source_matches_hand_written(source, mode):
    gm = assembler.compile(source, seed=3)["cnn"]
    hand = HandCNN()
    _copy_into(hand, gm)
    getattr(gm, mode)()
    getattr(hand, mode)()
    x = torch.rand(8, 1, 8, 8)
    y1, y2 = gm(x), hand(x)
    assert torch.allclose(y1, y2, atol=1e-6)
    y1.square().sum().backward()
    y2.square().sum().backward()
    g1 = dict(gm.named_parameters())
    for name, p in hand.named_parameters():
        head, rest = name.split(".", 1)
        key = {"b1": "c1", "b2": "c2", "b3": "c3", "b4": "c4"}.get(head, "logits.1") + "." + rest
        assert torch.allclose(g1[key].grad, p.grad, atol=1e-5), name


def test_graph_reads_like_the_spec(source):
    gm = assembler.compile(source)["cnn"]
    gm.graph.lint()
    names = [n.name for n in gm.graph.nodes]
    for b in ["x", "c1", "c2", "c3", "c4", "logits"]:
        assert b in names
    assert "c2.0.weight" in gm.state_dict()
    assert sum(n.op in ("call_module", "call_function") for n in gm.graph.nodes) == 16


def test_seed_determines_weights(source):
    a, b, c = (assembler.compile(source, seed=s)["cnn"].state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["c1.0.weight"], c["c1.0.weight"])


def test_frozen_blocks_never_change():
    spec = assembler.load(SPECS / "tailor.net")
    asm = assembler.compile(spec)
    student = asm["student"]
    frozen = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("pre.")}
    params = asm.trainable_parameters("student")
    assert params and all(p.requires_grad for p in params)
    assert not any(k.startswith("pre.") for k, p in student.named_parameters() if p.requires_grad)
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    student.train()
    for _ in range(3):
        opt.zero_grad()
        student(torch.rand(16, 1, 8, 8)).square().mean().backward()
        opt.step()
    after = student.state_dict()
    for k, v in frozen.items():  # weights and batch-norm running statistics
        assert torch.equal(v, after[k]), k
    assert not torch.equal(asm.modules["student.c2.gate"].logits, torch.tensor([2.0, -2.0, -2.0]))


def test_shared_modules_are_one_object():
    asm = assembler.compile(assembler.load(SPECS / "compat.net"))
    a, b = asm["a"], asm["b"]
    assert a.get_submodule("rot.0.4") is b.get_submodule("rot.0.4")
    assert a.get_submodule("f.0.0") is not b.get_submodule("f.0.0")
    # the recombined network reuses a's extractor and b's head
    assert asm["ab"].get_submodule("a.f.0.0") is a.get_submodule("f.0.0")
    assert asm["ab"].get_submodule("b.y.0.0") is b.get_submodule("y.0.0")


def test_recombined_network_computes_extractor_then_head():
    asm = assembler.compile(assembler.load(SPECS / "compat.net"))
    for m in asm.modules.values():
        m.eval()
    x = torch.rand(4, 1, 8, 8)
    fa = asm.network("a", taps=["f"])(x)[1]["f"]
    yb = asm.network("b", taps=[])
    head = assembler.compile(assembler.load(SPECS / "compat.net"))  # independent check below
    out = asm["ab"](x)
    # b's head on a's features, through b's own modules
    b_head = [asm.modules[k] for k in asm.module_of("b", "y")]
    h = b_head[1](b_head[0](fa))
    h = torch.relu(h).mean((2, 3))
    assert torch.allclose(out, b_head[2](h), atol=1e-6)
    assert yb is not None and head is not None


def test_taps_return_bindings_from_one_pass(source):
    asm = assembler.compile(source)
    gm = asm.network("cnn", taps=["c2", "c4"])
    out, taps = gm(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 5) and taps["c2"].shape == (2, 32, 4, 4) and taps["c4"].shape == (2, 64, 2, 2)
    assert sum(n.op == "call_module" for n in gm.graph.nodes) == sum(
        n.op == "call_module" for n in asm["cnn"].graph.nodes)


def test_gate_init_and_softmax():
    spec = assembler.parse("network n(x: [2, 4, 4]) {\n"
                           "    a = x -> conv(2, 1)\n"
                           "    g = gate(a, x, x -> relu, init=[1, 0, -1])\n"
                           "    return g\n}\n")
    asm = assembler.compile(spec)
    gate = asm.modules["n.g.gate"]
    assert torch.equal(gate.logits.detach(), torch.tensor([1.0, 0.0, -1.0]))
    x = torch.randn(3, 2, 4, 4)
    a = asm.modules["n.a.0"](x)
    w = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0)
    assert torch.allclose(asm["n"](x), w[0] * a + w[1] * x + w[2] * torch.relu(x), atol=1e-6)


def test_copy_starts_from_the_source_weights_and_is_private(tmp_path):
    spec = assembler.load(SPECS / "tailor.net")
    asm = assembler.compile(spec)
    t, s = asm["teacher"], asm["student"]
    assert torch.equal(t.get_submodule("c1.0.0").weight, s.get_submodule("pre.c1.0").weight)
    assert t.get_submodule("c1.0.0") is not s.get_submodule("pre.c1.0")
    assert t.get_submodule("c1.0.0").weight.requires_grad


def test_checkpoint_round_trip(tmp_path, source):
    asm = assembler.compile(source, seed=5)
    with torch.no_grad():
        asm.modules["cnn.c1.1"].running_mean.add_(0.5)
    out = assembler.save(asm, tmp_path / "ckpt", settings={"epochs": 1})
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "meta.json.sha256", "spec.net",
                                                     "weights.safetensors"]
    back = assembler.restore(out)
    x = torch.rand(3, 1, 8, 8)
    asm["cnn"].eval()
    back["cnn"].eval()
    assert torch.equal(asm["cnn"](x), back["cnn"](x))
    assert assembler.load(out).networks.keys() == {"cnn"}


def test_checkpoint_corruption_is_a_located_error(tmp_path, source):
    out = assembler.save(assembler.compile(source), tmp_path / "ckpt")
    weights = out / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        assembler.restore(out)
    assert e.value.filename.endswith("weights.safetensors")
    assert "does not match its hash" in e.value.message


def test_checkpoint_shape_mismatch_names_the_binding(tmp_path, source):
    out = assembler.save(assembler.compile(source), tmp_path / "ckpt")
    text = (out / "spec.net").read_text().replace("conv(32, 3, pad=1)", "conv(24, 3, pad=1)")
    (out / "spec.net").write_text(text)
    meta = json.loads((out / "meta.json").read_text())
    meta["hashes"]["spec.net"] = assembler.checkpoint.sha256(out / "spec.net")
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "meta.json.sha256").write_text(assembler.checkpoint.sha256(out / "meta.json"))
    with pytest.raises(CheckpointError) as e:
        assembler.restore(out)
    assert "binding 'c2' of network 'cnn'" in e.value.message and "spec.net:3:" in e.value.message


def test_import_of_a_checkpoint_brings_its_weights(tmp_path, source):
    trained = assembler.compile(source, seed=11)
    assembler.save(trained, tmp_path / "pre")
    (tmp_path / "use.net").write_text('use "pre" as p\n'
                                      "network s(x: [1, 8, 8]) {\n    f = x -> p.c1..c2\n    return f\n}\n")
    asm = assembler.compile(assembler.load(tmp_path / "use.net"))
    assert not asm.warnings or "not been trained" not in " ".join(asm.warnings)
    assert torch.equal(asm.modules["p.c2.0"].weight, trained.modules["cnn.c2.0"].weight)
    assert not asm.modules["p.c2.0"].weight.requires_grad
    shutil.rmtree(tmp_path / "pre")
    with pytest.raises(assembler.SpecError):
        assembler.load(tmp_path / "use.net")


from hypothesis import HealthCheck, given, settings  # noqa: E402

from assembler.testing import strategies  # noqa: E402
from assembler.testing.checks import assert_compiles  # noqa: E402


@given(strategies.specs(max_networks=2, max_bindings=6))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_compiled_output_shapes_equal_inferred_shapes(spec):
    asm = assert_compiles(spec)  # runs every network and compares each output with its inferred shape
    for name in asm:
        asm[name].graph.lint()
