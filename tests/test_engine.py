"""The trainer/procedure contract (training engine v2): stages, named optimizers and procedure
state resume bit-identically after a real SIGINT in each stage; printed resume commands work
as printed; matching edges' regressors train; label-free data; sub-graphs, variants and
functional steps; devices; per-network metrics."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import assembler
from assembler.errors import CheckError, SpecError
from assembler.train import functional as fn
from conftest import SPECS, assembler_cmd, same_run
from conftest import run as run_with


NET = """\
network {name}(x: [1, 8, 8]) {{
    h = x -> conv(8, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    y = h -> gap -> linear({classes})
    return y
}}
"""

TWO_STAGE = NET.format(name="a", classes=3) + NET.format(name="b", classes=3) + """
train a, b {
    procedure = toy_two_stage
    data = [digits(classes=[0, 1, 2]), digits(classes=[3, 4, 5])]
    optimizer = sgd(lr=0.05, momentum=0.9)
    epochs = 2
    batch = 32
}
"""

BILEVEL = NET.format(name="n", classes=5) + """
train n {
    procedure = toy_bilevel(meta_lr=0.05)
    data = digits(classes=[0, 1, 2, 3, 4])
    optimizer = sgd(lr=0.05, momentum=0.9, weight_decay=0.0001)
    epochs = 2
    batch = 64
}
"""


def run(args, cwd, fault=None):
    """`conftest.run` with the toy procedures of tests/toyprocs.py installed."""
    return run_with(args, cwd, fault, plugins="toyprocs")


def resume_words(stderr: str) -> list[str]:
    line = next(x for x in stderr.splitlines() if "continue with:" in x)
    words = shlex.split(line.split("continue with:", 1)[1])
    assert words[0] == "assembler"
    return assembler_cmd(*words[1:])


@pytest.mark.parametrize("spec, fault, extra", [
    (TWO_STAGE, "sigint@0:1:3", ["--set", "batch=32"]),  # inside stage "first", epoch 2
    (TWO_STAGE, "sigint@1:0:2", ["--set", "batch=32"]),  # inside stage "second", epoch 1
    (BILEVEL, "sigint@0:1:4", ["--set", "seed=3"]),
], ids=["two-stage-first", "two-stage-second", "bilevel"])
def test_interrupted_stages_resume_bit_identically(tmp_path, spec, fault, extra):
    (tmp_path / "toy.net").write_text(spec)
    full = run(assembler_cmd("train", "toy.net", "--out", "full", "-q", *extra), tmp_path)
    assert full.returncode == 0, full.stderr
    cut = run(assembler_cmd("train", "toy.net", "--out", "cut", *extra), tmp_path, fault=fault)
    assert cut.returncode == 130, cut.stderr
    words = resume_words(cut.stderr)
    assert words[-1] == "--resume" and all(x in words for x in extra)  # every --set is kept
    meta = json.loads(next((tmp_path / "cut").glob("*/meta.json")).read_text())
    stage, epoch, _ = (int(v) for v in fault.split("@")[1].split(":"))
    assert (meta["train"]["stage"], meta["train"]["epoch"], meta["train"]["complete"]) == (stage, epoch, False)
    again = run(words, tmp_path)
    assert again.returncode == 0, again.stderr
    net = "a" if spec is TWO_STAGE else "n"
    same_run(tmp_path / "full" / net, tmp_path / "cut" / net)
    final = json.loads((tmp_path / "cut" / net / "meta.json").read_text())["metrics"]
    assert ("steps" in final) if spec is TWO_STAGE else final["log_w"] != 0.0


def test_two_stage_metrics_name_each_network_and_optimizer(tmp_path):
    (tmp_path / "toy.net").write_text(TWO_STAGE)
    r = run(assembler_cmd("train", "toy.net", "--out", "o", "--set", "epochs=1"), tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "o/a/metrics.jsonl").read_text().splitlines()]
    first, second = lines[0], lines[1]
    assert first["stage"] == "first" and set(first["networks"]) == {"a"}
    assert second["stage"] == "second" and set(second["networks"]) == {"b"}
    assert {"lr", "lr.head"} <= second.keys() and second["networks"]["b"]["test_accuracy"] is not None
    assert "a, b [second]: epoch 1" in r.stderr  # progress names the networks and the stage


def test_each_optimizer_follows_its_schedule_per_stage(tmp_path):
    """The section's schedule (step, halving every epoch) drives the `model` optimizer; the
    procedure's `head` optimizer keeps its own (cosine over the stage's 3 epochs:
    0.003 * (1 + cos(pi * e / 3)) / 2); each stage starts its schedules afresh. The logged lr
    is the one the epoch trained with."""
    import math
    (tmp_path / "toy.net").write_text(TWO_STAGE)
    r = run(assembler_cmd("train", "toy.net", "--out", "o", "--set", "epochs=3", "--set",
                          "schedule=step(every=1, gamma=0.5)", "-q"), tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "o/a/metrics.jsonl").read_text().splitlines()][:-1]
    assert [(x["stage"], x["epoch"]) for x in lines] == [("first", 1), ("first", 2), ("first", 3),
                                                         ("second", 1), ("second", 2), ("second", 3)]
    assert [x["lr"] for x in lines] == pytest.approx([0.05, 0.025, 0.0125] * 2)
    assert [x["lr.head"] for x in lines[3:]] == pytest.approx(
        [0.003 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)])


def test_bilevel_meta_gradient_equals_finite_differences():
    """The toy's look-ahead: d CE(theta_2(w)) / d w through two functional SGD steps, against
    central differences in float64."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    named = dict(lin.named_parameters())

    def outer(log_w, create_graph=True):
        params, momenta = fn.detached(named), {k: None for k in named}
        for _ in range(2):
            logits = fn.call(lin, params, x)
            inner = torch.nn.functional.cross_entropy(logits, y) + log_w.exp() * logits.pow(2).mean()
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=create_graph)
            params, momenta = fn.sgd_step(params, grads, momenta, lr=0.3, momentum=0.9, weight_decay=0.01)
        return torch.nn.functional.cross_entropy(fn.call(lin, params, x), y)

    log_w = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    g, = torch.autograd.grad(outer(log_w), [log_w])
    eps = 1e-5
    fd = (outer(torch.tensor(0.2 + eps, dtype=torch.float64)) - outer(torch.tensor(0.2 - eps, dtype=torch.float64))) / (2 * eps)
    assert abs(g.item() - fd.item()) <= 1e-6 * max(1.0, abs(fd.item()))


def test_functional_sgd_step_equals_torch_sgd():
    torch.manual_seed(1)
    lin = torch.nn.Linear(5, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    x = torch.randn(8, 5)
    named = dict(lin.named_parameters())
    for _ in range(3):  # compare on the third step, with momentum buffers in play
        params, momenta = fn.detached(named), fn.momentum_buffers(opt, named)
        loss = lin(x).pow(2).mean()
        grads = torch.autograd.grad(fn.call(lin, params, x).pow(2).mean(), list(params.values()))
        expected, _ = fn.sgd_step(params, grads, momenta, **fn.sgd_hyper(opt, named["weight"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        for k, p in named.items():
            assert torch.allclose(p, expected[k], atol=1e-7), k


FITNET = """\
use "source.net" as src

network tgt(x: [1, 8, 8]) {
    b1 = x -> conv(8, 3, pad=1) -> relu
    b2 = b1 -> conv(16, 3, pad=1) -> relu -> maxpool(2)
    logits = b2 -> gap -> linear(5)
    return logits
}

match src.c2 -> tgt.b2, src.c1 -> tgt.b1 : fitnet

train tgt {
    procedure = matching(beta=1.0)
    data = digits(classes=[5, 6, 7, 8, 9], per_class=10)
    epochs = 2
}
"""


def test_fitnet_regressors_train_with_the_target_and_are_saved(tmp_path, monkeypatch):
    shutil_copy(tmp_path, "source.net")
    (tmp_path / "fm.net").write_text(FITNET)
    monkeypatch.chdir(tmp_path)
    asm = assembler.compile(assembler.load("fm.net"))
    names = asm.named_parameters("tgt")
    assert "match[src.c2->tgt.b2].regressor.weight" in names and "b1.0.weight" in names
    before = asm.edges[0].regressor.weight.detach().clone()
    from assembler.train.run import train_spec
    history = train_spec(assembler.load("fm.net"), out=tmp_path / "o", quiet=True)["tgt"]
    assert history[-1]["matching"] > 0
    stored = load_file(str(tmp_path / "o/tgt/weights.safetensors"))
    assert "match.0.regressor.weight" in stored and not torch.equal(stored["match.0.regressor.weight"], before)
    src = assembler.restore(tmp_path / "o/tgt").imports["src"]
    assert not any(p.requires_grad for m in src.modules.values() for p in m.parameters())


def shutil_copy(dest: Path, *names: str) -> None:
    import shutil
    for n in names:
        shutil.copy(SPECS / n, dest / n)


def test_noise_data_is_label_free_and_shaped_like_the_input():
    from assembler.data import noise
    ds = noise(n=10, dist="normal", seed=2, shape=(1, 8, 8))
    assert ds.x.shape == (10, 1, 8, 8) and (ds.y == -1).all() and not ds.labeled
    assert torch.equal(ds.x, noise(n=10, dist="normal", seed=2, shape=(1, 8, 8)).x)


def test_a_procedure_that_needs_labels_refuses_noise_at_the_data_setting():
    spec = assembler.parse(NET.format(name="n", classes=5) + "train n {\n    data = noise(n=64)\n}\n", "z.net")
    with pytest.raises(CheckError) as e:
        assembler.check(spec)
    assert e.value.line == 7 and "procedure 'finetune' needs labelled data, but 'noise' gives no labels" in e.value.message


def test_subgraph_from_a_binding_equals_the_tail_of_the_network():
    asm = assembler.compile(assembler.parse(NET.format(name="n", classes=5)), imports=False)
    gm, tail = asm.network("n", taps=["h"]), asm.network("n", start=["h"])
    gm.eval(), tail.eval()
    x = torch.rand(3, 1, 8, 8)
    out, acts = gm(x)
    assert torch.equal(tail(acts["h"]), out)
    with pytest.raises(KeyError, match="no binding"):
        asm.network("n", start=["nope"])


def test_a_subgraph_can_end_at_bindings():
    """`end`: the sub-graph returns those bindings' values and runs nothing else; with `start`,
    one binding computed from the values it reads (NetTailor's layer-local teacher term)."""
    asm = assembler.compile(assembler.parse(NET.format(name="n", classes=5)), imports=False)
    full, head, layer = asm.network("n", taps=["h"]), asm.network("n", end=["h"]), asm.network("n", start=["h"], end=["y"])
    for g in (full, head, layer):
        g.eval()
    x = torch.rand(3, 1, 8, 8)
    out, acts = full(x)
    assert torch.equal(head(x), acts["h"]) and torch.equal(layer(acts["h"]), out)
    assert not any(n.name.startswith("y") for n in head.graph.nodes)  # the classifier does not run
    with pytest.raises(KeyError, match="no binding"):
        asm.network("n", end=["nope"])


def test_a_registered_variant_rewrites_a_copy_of_the_graph():
    from torch import fx

    from assembler.variants import copy_graph, register_variant

    @register_variant("no_relu_test")
    def no_relu(gm: fx.GraphModule) -> fx.GraphModule:
        out = copy_graph(gm)
        for node in list(out.graph.nodes):
            if node.op == "call_function" and node.target is torch.relu:
                node.replace_all_uses_with(node.args[0])
                out.graph.erase_node(node)
        out.recompile()
        return out

    asm = assembler.compile(assembler.parse(NET.format(name="n", classes=5)), imports=False)
    plain, variant = asm.network("n"), asm.network("n", variant="no_relu_test")
    assert "relu" in plain.code and "relu" not in variant.code
    assert variant.get_submodule("h.0") is plain.get_submodule("h.0")  # parameters stay tied


def test_device_flag_is_checked(tmp_path, monkeypatch):
    from assembler.train.device import resolve
    assert resolve("cpu").type == "cpu" and resolve("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="--device: 'cuda' asked for, but torch sees no CUDA device"):
            resolve("cuda")
    with pytest.raises(SpecError, match="unknown device 'tpu'"):
        resolve("tpu")
    bad = assembler.parse(NET.format(name="n", classes=5) + 'train n {\n    data = digits()\n    device = "tpu"\n}\n')
    with pytest.raises(CheckError, match="setting 'device' must be"):
        assembler.check(bad)


def test_training_refuses_to_overwrite_and_says_when_nothing_resumes(tmp_path):
    (tmp_path / "n.net").write_text(NET.format(name="n", classes=5) + "train n {\n    data = digits(classes=[0, 1, 2, 3, 4], per_class=8)\n    epochs = 1\n}\n")
    assert run(assembler_cmd("train", "n.net", "--out", "o", "-q"), tmp_path).returncode == 0
    again = run(assembler_cmd("train", "n.net", "--out", "o", "-q"), tmp_path)
    assert again.returncode == 1 and "o/n already holds a checkpoint" in again.stderr and "--force" in again.stderr
    assert run(assembler_cmd("train", "n.net", "--out", "o", "-q", "--force"), tmp_path).returncode == 0
    fresh = run(assembler_cmd("train", "n.net", "--out", "p", "--resume"), tmp_path)
    assert fresh.returncode == 0 and "nothing to resume in p/n: training from the start" in fresh.stderr
    done = run(assembler_cmd("train", "n.net", "--out", "p", "--resume"), tmp_path)
    assert done.returncode == 0 and "already trained (complete)" in done.stderr
    other = run(assembler_cmd("train", "n.net", "--out", "p", "--resume", "--set", "seed=7"), tmp_path)
    assert other.returncode == 1 and "another spec or other settings" in other.stderr


def test_the_teacher_a_network_needs_is_trained_once(tmp_path):
    (tmp_path / "kd.net").write_text(
        NET.format(name="big", classes=5) + NET.format(name="small", classes=5)
        + "train big {\n    data = digits(classes=[0, 1, 2, 3, 4], per_class=8)\n    epochs = 1\n}\n"
        + "train small {\n    procedure = distill(teacher=big)\n    data = digits(classes=[0, 1, 2, 3, 4], per_class=8)\n"
        + "    epochs = 1\n}\n")
    first = run(assembler_cmd("train", "kd.net", "-n", "small", "--out", "s1"), tmp_path)
    assert first.returncode == 0 and "big: epoch 1" in first.stderr, first.stderr
    second = run(assembler_cmd("train", "kd.net", "-n", "small", "--out", "s2", "--set", "epochs=2"), tmp_path)
    assert second.returncode == 0 and "big: epoch" not in second.stderr
    assert "big: " in second.stderr and "already trained (complete); reusing it" in second.stderr


def test_a_cached_teacher_another_run_wrote_is_trained_again(tmp_path, monkeypatch):
    """A cached section whose stored run key disagrees (another version of assembler wrote it)
    is trained again, with a note, not refused as a failed --resume. A cache of its own: in the
    session's, other test workers write sections at the same time."""
    import hashlib
    import json
    from assembler.cache import cache_root
    monkeypatch.setenv("ASSEMBLER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "kd.net").write_text(
        NET.format(name="big", classes=5) + NET.format(name="small", classes=5)
        + "train big {\n    data = digits(classes=[0, 1, 2, 3, 4], per_class=9)\n    epochs = 1\n}\n"
        + "train small {\n    procedure = distill(teacher=big)\n    data = digits(classes=[0, 1, 2, 3, 4], per_class=9)\n"
        + "    epochs = 1\n}\n")
    sections = cache_root() / "sections"
    before = set(sections.iterdir()) if sections.is_dir() else set()
    assert run(assembler_cmd("train", "kd.net", "-n", "small", "--out", "s1"), tmp_path).returncode == 0
    [cached] = [d for d in set(sections.iterdir()) - before if (d / "meta.json").is_file()]
    meta = json.loads((cached / "meta.json").read_text())
    meta["train"]["run"] = "0" * 64  # what another version's run key would be
    raw = json.dumps(meta).encode()
    (cached / "meta.json").write_bytes(raw)
    (cached / "meta.json.sha256").write_text(hashlib.sha256(raw).hexdigest())
    again = run(assembler_cmd("train", "kd.net", "-n", "small", "--out", "s2"), tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"note: {cached} was written by another version or run; training it again" in again.stderr
    assert "big: epoch 1" in again.stderr
