"""NetTailor: E[C] against a hand computation, pruning of constructed alphas with cascades,
and the shared tailor.net example end to end (shortened)."""

from __future__ import annotations

import json
import math
import shlex
import shutil

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import SPECS, assembler_cmd, run
import assembler
from assembler.cli import main
from assembler.edits import prune
from assembler.train.nettailor import ExpectedComplexity, TeacherTerm
from assembler.graph import gate_paths
from assembler.train.tailor import path_costs, pruning_plan
from assembler.train.tailor import prune_assembly


TWO_LAYERS = """\
network n(x: [2, 4, 4]) {
    a = gate(x -> conv(2, 3, pad=1), x -> proxy(2, 1))
    b = gate(a -> conv(2, 3, pad=1), x -> proxy(2, 1), a -> proxy(2, 1), init=[1, 0, -1])
    y = b -> gap -> linear(3)
    return y
}
"""


def softmax(xs):
    e = [math.exp(v) for v in xs]
    return [v / sum(e) for v in e]


def test_expected_complexity_by_hand():
    asm = assembler.compile(assembler.parse(TWO_LAYERS))
    net = asm.checked.networks["n"]
    # FLOPs (multiply-accumulates): conv 3x3 2->2 on 4x4 = 576, proxy 1x1 = 64 + its batch-norm 32,
    # gap 32, linear 6.
    total = 576 + 576 + 32 + 6  # the network without proxies and gates
    paths = gate_paths(net)
    costs = {(p.gate.binding, p.index): c for p, c in zip(paths, path_costs(net, paths))}
    assert costs == {("a", 0): 576 / total, ("a", 1): 96 / total, ("b", 0): 576 / total,
                     ("b", 1): 96 / total, ("b", 2): 96 / total}
    a, b = softmax([2, -2]), softmax([1, 0, -1])
    p_in_from_a = (1 - a[0]) * (1 - a[1])  # every path merging into a excluded
    p_out_of_a = (1 - b[0]) * (1 - b[2])  # every path leaving a excluded (b0 and b2 read a)
    # x is an input (never excluded); b is read by the classifier (never output-excluded)
    expected = (576 * (a[0] - 0 - p_out_of_a) + 96 * (a[1] - 0 - p_out_of_a)
                + 576 * (b[0] - p_in_from_a - 0) + 96 * (b[1] - 0 - 0) + 96 * (b[2] - p_in_from_a - 0)) / total
    ec = ExpectedComplexity(net, asm.modules)()
    assert ec.item() == pytest.approx(expected, rel=1e-6)
    ec.backward()
    assert asm.modules["n.a.gate"].logits.grad is not None
    assert asm.modules["n.a.gate"].logits.grad.abs().sum() > 0


@pytest.mark.parametrize("threshold, k, text", [
    # a's proxy (alpha 0.018) goes; b's weakest block... b0 (0.665) is the least important block
    (0.05, 1, "a = x -> conv(2, 3, pad=1)\n    b = gate(x -> proxy(2, 1), a -> proxy(2, 1), init=[0.0, -1.0])"),
    # both blocks and a's proxy: a is left without paths, so b's proxy from a goes too (cascade)
    (0.05, 2, "b = x -> proxy(2, 1)\n    y = b"),
    # nothing below the threshold, no block: unchanged
    (0.01, 0, "a = gate(x -> conv(2, 3, pad=1), x -> proxy(2, 1))"),
])
def test_pruning_constructed_alphas(threshold, k, text):
    asm = assembler.compile(assembler.parse(TWO_LAYERS))
    new, removed, items = prune_assembly(asm, "n", threshold, k)
    assert text in assembler.format(new.spec)
    assembler.check(new.spec)


def test_pruning_zero_alpha_paths_keeps_the_function():
    asm = assembler.compile(assembler.parse(TWO_LAYERS))
    with torch.no_grad():
        asm.modules["n.a.gate"].logits.copy_(torch.tensor([0.3, float("-inf")]))
        asm.modules["n.b.gate"].logits.copy_(torch.tensor([float("-inf"), 0.5, -0.2]))
    items, removed = pruning_plan(asm.checked.networks["n"], asm.modules, threshold=1e-9, k=1)
    assert sorted(items) == ["a.in1", "b.in0"] and removed == ["b"]
    new, _, _ = prune_assembly(asm, "n", 1e-9, 1)
    x = torch.rand(5, 2, 4, 4)
    asm["n"].eval()
    new["n"].eval()
    assert torch.allclose(asm["n"](x), new["n"](x), atol=1e-6)


def test_tailor_example_end_to_end(work):
    run = CliRunner()
    r = run.invoke(main, ["train", "tailor.net", "--network", "student", "--out", "tailored", "-q",
                          "--set", "epochs=2", "--set", "procedure.retrain_epochs=1", "--set", "procedure.blocks=[0, 2]"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (work / "tailored/metrics.jsonl").read_text().splitlines()]
    final = lines[-1]
    assert final["stage"] == "final" and [row["k"] for row in final["tailor"]] == [0, 2]
    assert {"params", "flops", "accuracy", "removed_blocks"} <= final["tailor"][0].keys()
    assert {"ce", "complexity", "teacher"} <= lines[0].keys()
    text = (work / "tailored/spec.net").read_text()
    assert "skips" not in text
    for cmd in (["check", "tailored"], ["show", "tailored", "--json"], ["fmt", "--check", "tailored/spec.net"],
                ["graph", "tailored", "-n", "student", "-o", "t.svg"], ["eval", "tailored", "--json"]):
        r = run.invoke(main, cmd)
        assert r.exit_code == 0, (cmd, r.output)
    shown = json.loads(run.invoke(main, ["show", "tailored", "--json", "-n", "student"]).output)
    assert shown["student"]["flops"] == final["flops"]
    assert shown["student"]["nettailor"]["tailor"] == final["tailor"]
    assert shown["student"]["nettailor"]["chosen_k"] == final["chosen_k"] and "nettailor" not in json.loads(
        run.invoke(main, ["show", "tailored", "--json"]).output)["teacher"]
    from assembler.train.tailor import table
    shown = run.invoke(main, ["show", "tailored", "-n", "student"]).output  # the -q run's table, from meta.json
    assert shown.endswith("nettailor's choice for student, as recorded when the checkpoint was trained:\n"
                          + "".join(f"  {line}\n" for line in table(final).splitlines()))
    assert "<- kept" in shown and "nettailor's choice" not in run.invoke(main, ["show", "tailored", "-n", "teacher"]).output
    assert run.invoke(main, ["compile", "tailor.net", "-o", "init"]).exit_code == 0
    r = run.invoke(main, ["prune", "init", "-n", "student", "--threshold", "0.01", "--blocks", "1", "-o", "pruned"])
    assert r.exit_code == 0, r.output
    # at initialisation the 4-path gates' blocks are weakest (alpha 0.947): c3 comes first by name
    assert r.output.startswith("removed 1 path(s): c3.in0\n")
    r = run.invoke(main, ["prune", "init", "-n", "student", "--threshold", "0.5", "--blocks", "1", "-o", "p2"])
    assert r.exit_code == 1 and "would remove the output(s) logits" in r.output
    r = run.invoke(main, ["prune", "init", "-n", "student", "--blocks", "5", "-o", "p3"])
    assert r.exit_code == 1 and r.output == ("--blocks: error: --blocks 5: network 'student' has only 4 removable "
                                             "pre-trained block(s)\nhint: give --blocks 4 or less\n")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """tailor.net's student trained without interruption (shortened), for the resume tests."""
    d = tmp_path_factory.mktemp("tailor")
    for f in SPECS.glob("*.net"):
        shutil.copy(f, d / f.name)
    full = run(assembler_cmd(*RESUMABLE, "--out", "full", "-q"), d)
    assert full.returncode == 0, full.stderr
    return d


# batch 32: the student's epochs have 17 steps, the teacher's (trained first, in memory) 9, so a
# fault at step 12 of stage 0 interrupts the student's stage "train", not the teacher
RESUMABLE = ["train", "tailor.net", "--network", "student", "--set", "epochs=2", "--set", "batch=32",
             "--set", "procedure.retrain_epochs=1",
             "--set", "procedure.blocks=[0, 1]", "--set", "procedure.threshold=0.01", "--set", "procedure.latency=false"]


@pytest.mark.parametrize("fault", ["sigint@0:1:12", "sigint@2:0:1"], ids=["train", "retrain-k1"])
def test_ctrl_c_in_each_stage_resumes_as_printed(uninterrupted, fault):
    """A real SIGINT inside the stage "train" (epoch 2) and inside the fine-tuning of k=1
    (stage 2): the checkpoint holds that stage's network, the printed command resumes it, and
    the result equals an uninterrupted run bit for bit."""
    d, out = uninterrupted, f"cut-{fault.split('@')[1].replace(':', '-')}"
    cut = run(assembler_cmd(*RESUMABLE, "--out", out), d, fault=fault)
    assert cut.returncode == 130, cut.stderr
    assert f"saved {out};" in cut.stderr and "None" not in cut.stderr
    meta = json.loads((d / out / "meta.json").read_text())
    assert meta["train"]["stage"] == int(fault.split("@")[1][0]) and not meta["train"]["complete"]
    words = shlex.split(cut.stderr.split("continue with:", 1)[1].splitlines()[0])
    again = run(assembler_cmd(*words[1:]), d)
    assert again.returncode == 0, again.stderr
    for name in ("weights.safetensors", "spec.net"):
        assert (d / "full" / name).read_bytes() == (d / out / name).read_bytes()
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(d / "full") == strip(d / out)


# -- the reference code's mixing ---------------------------------------------------------------

MIXED = """\
network n(x: [2, 8, 8]) {
    a = gate(x -> conv(3, 3, pad=1) -> batchnorm -> relu -> maxpool(2), x -> proxy(3, 2), mix="relu")
    b = gate(a -> conv(3, 3, pad=1) -> relu, a -> proxy(3, 1), x -> proxy(3, 2), init=[0.5, 0.2, -1], mix="relu")
    y = b -> gap -> linear(2)
    return y
}
"""


def test_relu_mixing_equals_a_hand_written_module():
    """relu(sum_i alpha_i path_i) with each path's own final ReLU moved after the mix: a's block
    ends relu -> maxpool (the max commutes with the ReLU), b's ends in relu."""
    asm = assembler.compile(assembler.parse(MIXED))
    net = asm.checked.networks["n"]
    assert [n.args["absorbed"] for n in net.nodes if n.op == "gate"] == [[0], [0]]
    assert [n.op for n in net.nodes_of("a")] == ["conv", "batchnorm", "maxpool", "proxy", "gate"]
    m = asm.modules
    with torch.no_grad():
        bn = m["n.a.in0.1"]
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    gm = asm["n"].eval()
    x = torch.randn(4, 2, 8, 8)

    def proxy(p, v):  # the reference's BasicProxy: max-pool (stride > 1), 1x1 conv, batch-norm
        v = F.max_pool2d(v, p.pool.kernel_size, p.pool.stride, p.pool.padding) if p.pool is not None else v
        return F.batch_norm(F.conv2d(v, p.conv.weight), p.bn.running_mean, p.bn.running_var, p.bn.weight, p.bn.bias)

    with torch.no_grad():
        aa, ab = m["n.a.gate"].alphas(), m["n.b.gate"].alphas()
        bn = m["n.a.in0.1"]
        block_a = F.max_pool2d(F.batch_norm(m["n.a.in0.0"](x), bn.running_mean, bn.running_var, bn.weight, bn.bias), 2)
        a = torch.relu(aa[0] * block_a + aa[1] * proxy(m["n.a.in1.0"], x))
        b = torch.relu(ab[0] * m["n.b.in0.0"](a) + ab[1] * proxy(m["n.b.in1.0"], a) + ab[2] * proxy(m["n.b.in2.0"], x))
        expected = m["n.y.1"](b.mean(dim=(2, 3)))
        assert torch.allclose(gm(x), expected, atol=1e-6)
    # the gate counts its ReLU (n + 1 per element); the moved ReLU is not counted twice
    assert net.node("a").flops == 3 * 3 * 4 * 4 and "relu" not in {n.op for n in net.nodes_of("a")}


def test_mix_is_checked_and_skips_sets_it():
    with pytest.raises(assembler.SpecError, match="argument 'mix' of 'gate' must be \"sum\" or \"relu\""):
        assembler.check(assembler.parse(MIXED.replace('mix="relu")', 'mix="max")', 1)))
    spec = assembler.load(SPECS / "tailor.net")
    text = assembler.format(assembler.expand(spec))
    assert 'c2 = gate(c1 -> pre.c2, x -> proxy(32, 2), c1 -> proxy(32, 2), mix="relu")' in text
    plain = assembler.format(assembler.expand(assembler.parse(assembler.format(spec).replace(
        "(k=3)", '(k=3, mix="sum")'), str(SPECS / "tailor.net"))))
    assert "c2 = gate(c1 -> pre.c2, x -> proxy(32, 2), c1 -> proxy(32, 2))\n" in plain


def test_a_collapsed_relu_gate_keeps_its_relu():
    """Pruned to one path, relu(1 * path): a proxy path gets a `relu`; a block path whose own
    ReLU the gate had taken gets it back by itself (nothing added)."""
    spec = assembler.parse(MIXED)
    proxy_only = assembler.format(prune(spec, "n", ["a.in0"]))
    assert "a = x -> proxy(3, 2) -> relu\n" in proxy_only
    block_only = assembler.format(prune(spec, "n", ["a.in1"]))
    assert "a = x -> conv(3, 3, pad=1) -> batchnorm -> relu -> maxpool(2)\n" in block_only
    assert 'init=[0.5, -1.0], mix="relu")' in assembler.format(prune(spec, "n", ["b.in1"]))


# -- the teacher term --------------------------------------------------------------------------

PAIRED = """\
network teacher(x: [2, 4, 4]) {
    a = x -> conv(2, 3, pad=1) -> relu
    b = a -> conv(2, 3, pad=1) -> relu
    y = b -> gap -> linear(3)
    return y
}

network student(x: [2, 4, 4]) {
    a = x -> conv(2, 3, pad=1) -> relu
    b = a -> conv(2, 3, pad=1) -> relu
    y = b -> gap -> linear(3)
    skips x, a, b (k=2)
    return y
}
"""


def test_layer_local_omega_against_a_hand_computation():
    """Omega = (sum of the element-mean squared differences) / L, L = 2 internal pairs; each
    internal student binding computed from the detached values it reads, the logits from the
    whole student. So b's term moves neither a's gate nor a's conv; the global form does."""
    asm = assembler.compile(assembler.parse(PAIRED))
    pairs = [("a", "a"), ("b", "b"), ("y", "y")]
    local = TeacherTerm(asm, "student", pairs, layers=2, local=True)
    assert set(local.local) == {"a", "b"} and local.local["b"][0] == ["x", "a"]
    m = asm.modules
    x = torch.randn(5, 2, 4, 4)
    student, teacher = asm.network("student", local.taps).eval(), asm.network("teacher", ["a", "b", "y"]).eval()
    out, acts = student(x)
    with torch.no_grad():
        _, t = teacher(x)
    omega = local(acts, t)

    def proxy(p, v):
        return F.batch_norm(F.conv2d(v, p.conv.weight), p.bn.running_mean, p.bn.running_var, p.bn.weight, p.bn.bias)

    aa, ab = m["student.a.gate"].alphas(), m["student.b.gate"].alphas()
    a_local = torch.relu(aa[0] * m["student.a.in0.0"](x) + aa[1] * proxy(m["student.a.in1.0"], x))
    a_det = acts["a"].detach()
    b_local = torch.relu(ab[0] * m["student.b.in0.0"](a_det) + ab[1] * proxy(m["student.b.in1.0"], x)
                         + ab[2] * proxy(m["student.b.in2.0"], a_det))
    expected = (((a_local - t["a"]) ** 2).mean() + ((b_local - t["b"]) ** 2).mean() + ((out - t["y"]) ** 2).mean()) / 2
    assert omega.item() == pytest.approx(expected.item(), rel=1e-6)

    def grads(local_form: bool):
        term = TeacherTerm(asm, "student", [("b", "b")], layers=1, local=local_form)
        for p in asm.trainable_parameters("student"):
            p.grad = None
        o, acts = asm.network("student", term.taps).eval()(x)
        term(acts, t).backward()
        return m["student.a.gate"].logits.grad, m["student.a.in0.0"].weight.grad, m["student.b.gate"].logits.grad

    a_gate, a_conv, b_gate = grads(True)
    assert a_gate is None and a_conv is None and b_gate.abs().sum() > 0
    a_gate, a_conv, _ = grads(False)
    assert a_gate.abs().sum() > 0 and a_conv.abs().sum() > 0


IMPORTED_TEACHER = """\
use "source.net" as pre

network student(x: [1, 8, 8]) {
    c1 = x -> pre.c1
    c2 = c1 -> pre.c2
    c3 = c2 -> pre.c3
    c4 = c3 -> pre.c4
    logits = c4 -> gap -> linear(5)
    skips x, c1, c2, c3, c4 (k=2)
    return logits
}

train student {
    procedure = nettailor(teacher=pre.cnn, blocks=[0, 1], threshold=0.01, latency=false)
    data = digits(split="train", classes=[5, 6, 7, 8, 9], per_class=30)
    validation = 0.2
    optimizer = sgd(lr=0.01, momentum=0.9)
    epochs = 1
}
"""


def test_an_imported_teacher_is_matched_layer_by_layer(tmp_path):
    """`teacher=pre.cnn`: the imported network runs with taps; its bindings pair with the
    student's by name and shape (c1..c4, logits), so Omega is on, not silently zero."""
    shutil.copy(SPECS / "source.net", tmp_path / "source.net")
    (tmp_path / "s.net").write_text(IMPORTED_TEACHER)
    r = CliRunner().invoke(main, ["train", str(tmp_path / "s.net"), "--network", "student", "--out",
                                  str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "o/metrics.jsonl").read_text().splitlines()]
    assert lines[0]["teacher"] > 0 and lines[-1]["stage"] == "final"
    # the import's own section trained on all its data: the summary says the choice may be optimistic
    assert "does not hold out the same samples" in lines[-1]["teacher_held_out"]


def test_a_teacher_without_pairs_is_a_located_check_error(tmp_path):
    shutil.copy(SPECS / "source.net", tmp_path / "source.net")
    renamed = IMPORTED_TEACHER.replace("c1", "d1").replace("c2", "d2").replace("c3", "d3").replace("c4", "d4") \
        .replace("logits", "out").replace("pre.d", "pre.c").replace("linear(5)", "linear(5) -> relu")
    (tmp_path / "s.net").write_text(renamed.replace("teacher=pre.cnn,", "teacher=pre.cnn, gamma2=10,"))
    r = CliRunner().invoke(main, ["check", str(tmp_path / "s.net")])
    assert r.exit_code == 1
    assert "s.net:14:35: error: nettailor: the teacher 'pre.cnn' and the student 'student' have no binding in " \
           "common" in r.output
    (tmp_path / "s.net").write_text(renamed.replace("teacher=pre.cnn,", "teacher=pre.cnn, gamma2=0,"))
    assert CliRunner().invoke(main, ["check", str(tmp_path / "s.net")]).exit_code == 0
    (tmp_path / "s.net").write_text(IMPORTED_TEACHER.replace("validation = 0.2", "validation = 0"))
    r = CliRunner().invoke(main, ["check", str(tmp_path / "s.net")])
    assert r.exit_code == 1 and "s.net:16:5: error: nettailor chooses k on held-out training data" in r.output


def test_a_failed_import_is_the_only_error(tmp_path):
    """A spec whose teacher and student read a missing import: the import's error alone, not
    a teacher term "without pairs" that follows from it."""
    text = (SPECS / "tailor.net").read_text()
    (tmp_path / "s.net").write_text(text.replace('use "source.net" as pre', 'use "missing.net" as pre'))
    r = CliRunner().invoke(main, ["check", str(tmp_path / "s.net")])
    assert r.exit_code == 1
    assert r.output.count("error:") == 1 and "error: cannot find 'missing.net'" in r.output


def test_more_blocks_than_the_student_has_is_a_located_error_before_training(tmp_path):
    shutil.copy(SPECS / "source.net", tmp_path / "source.net")
    (tmp_path / "s.net").write_text(IMPORTED_TEACHER.replace("blocks=[0, 1]", "blocks=[0, 9]"))
    r = CliRunner().invoke(main, ["train", str(tmp_path / "s.net"), "-o", str(tmp_path / "out"), "-q"])
    assert r.exit_code == 1
    assert "s.net:14:5: error: nettailor: blocks lists k=9, but 'student' has only 4 removable pre-trained " \
           "block(s)" in r.output and "hint: give numbers from 0 to 4" in r.output
    assert not (tmp_path / "out").exists()


# -- the held-out share ------------------------------------------------------------------------

def test_sections_with_the_same_data_and_seed_hold_out_the_same_samples(workdir):
    """tailor.net writes no `validation`: the student holds out NetTailor's 20%, and the
    teacher's section (same data and seed) the same stratified 20%, which NetTailor measures
    both on."""
    from assembler.train.trainer import Trainer
    spec = assembler.load(workdir / "tailor.net")
    asm = assembler.compile(spec)
    by_net = {t.networks[0]: t for t in asm.checked.trains}
    teacher = Trainer(asm, by_net["teacher"], None, base_dir=workdir, quiet=True)
    student = Trainer(asm, by_net["student"], None, base_dir=workdir, quiet=True)
    full = assembler.data.digits(split="train", classes=[5, 6, 7, 8, 9])
    held_t, held_s = teacher.ctx.val_data, student.ctx.val_data
    assert torch.equal(held_t.x, held_s.x) and torch.equal(teacher.ctx.train_data[0].x, student.ctx.train_data[0].x)
    assert len(held_t) + len(teacher.ctx.train_data[0]) == len(full)
    for c in range(5):  # stratified: 20% of each class
        assert int((held_t.y == c).sum()) == round(int((full.y == c).sum()) * 0.2)
    rows = {tuple(r.tolist()) for r in teacher.ctx.train_data[0].x.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in held_t.x.flatten(1))
    other = by_net["teacher"].model_copy(update={"settings": {**by_net["teacher"].settings, "seed": 1}})
    assert not torch.equal(Trainer(asm, other, None, base_dir=workdir, quiet=True).ctx.val_data.x, held_t.x)


def test_a_teacher_section_takes_its_students_share_unless_it_writes_one(tmp_path):
    """Only a section that writes no share, trains the student's teacher, and reads the same
    data with the same seed takes the student's `validation`."""
    base = (SPECS / "tailor.net").read_text()
    shutil.copy(SPECS / "source.net", tmp_path / "source.net")

    def shares(text: str) -> dict:
        (tmp_path / "s.net").write_text(text)
        checked = assembler.check(assembler.load(tmp_path / "s.net"))
        return {t.networks[0]: t.settings.get("validation") for t in checked.trains}

    assert shares(base) == {"teacher": 0.2, "student": 0.2}
    student_share = base.replace("    epochs = 20\n", "    epochs = 20\n    validation = 0.3\n")
    assert shares(student_share) == {"teacher": 0.3, "student": 0.3}
    own = base.replace("    epochs = 10\n", "    epochs = 10\n    validation = 0.1\n")
    assert shares(own) == {"teacher": 0.1, "student": 0.2}
    other_seed = base.replace("    epochs = 10\n", "    epochs = 10\n    seed = 1\n")
    assert shares(other_seed) == {"teacher": None, "student": 0.2}


def test_a_strided_proxy_counts_its_pool_conv_and_batch_norm():
    """proxy(32, 2) on a 32x8x8 map: a 3x3 max-pool per pooled element (32*4*4*9 = 4608), a
    1x1 conv (4*4 * 32*32 = 16384) and a batch-norm (32*4*4 = 512), as maxpool, conv and
    batchnorm count them apart."""
    spec = assembler.parse("network n(x: [32, 8, 8]) {\n    y = x -> proxy(32, 2)\n    return y\n}\n")
    apart = assembler.parse("network n(x: [32, 8, 8]) {\n    y = x -> maxpool(3, 2, pad=1) -> conv(32, 1, bias=false)"
                            " -> batchnorm\n    return y\n}\n")
    assert assembler.check(spec).flops("n") == 4608 + 16384 + 512 == assembler.check(apart).flops("n")
    assert assembler.check(spec).params("n") == assembler.check(apart).params("n") == 32 * 32 + 2 * 32


@pytest.mark.parametrize("teacher, tolerance, kept", [
    (0.98, 0.005, 2),  # k=2 (0.976) is within 0.5 points; k=3 (0.95) is not
    (0.98, 0.05, 3),  # k=3 within 5 points: the leanest
    (0.99, 0.005, 1),  # only k=1 (0.99) reaches 0.985
    (0.999, 0.0, 1),  # none reaches it: the most accurate, k=0 and k=1 tie: the leaner
])
def test_k_is_the_leanest_within_tolerance_of_the_teachers_held_out_accuracy(teacher, tolerance, kept):
    from assembler.train.tailor import choose
    rows = [{"k": 0, "flops": 100, "accuracy": 0.99}, {"k": 1, "flops": 80, "accuracy": 0.99},
            {"k": 2, "flops": 50, "accuracy": 0.976}, {"k": 3, "flops": 20, "accuracy": 0.95}]
    assert choose(rows, teacher, tolerance)["k"] == kept


@pytest.mark.parametrize("blocks", ["[-1]", "[1, 1]", "[]"])
def test_blocks_must_be_distinct_whole_numbers(tmp_path, blocks):
    shutil.copy(SPECS / "source.net", tmp_path / "source.net")
    (tmp_path / "s.net").write_text(IMPORTED_TEACHER.replace("blocks=[0, 1]", f"blocks={blocks}"))
    r = CliRunner().invoke(main, ["check", str(tmp_path / "s.net")])
    assert r.exit_code == 1
    assert f"s.net:14:51: error: 'blocks' of nettailor must list distinct whole numbers, 0 or more, got {blocks}" \
        in r.output


LATENCY_ROWS = [  # measured ratios against the teacher; k=3 is the leanest but slower than k=2
    {"k": 0, "flops": 100, "accuracy": 0.99, "latency": {"b1": 1.30, "b256": 1.20}},
    {"k": 1, "flops": 80, "accuracy": 0.99, "latency": {"b1": 1.10, "b256": 0.95}},
    {"k": 2, "flops": 60, "accuracy": 0.98, "latency": {"b1": 0.90, "b256": 0.85}},
    {"k": 3, "flops": 50, "accuracy": 0.98, "latency": {"b1": 0.80, "b256": 0.92}},
    {"k": 4, "flops": 20, "accuracy": 0.90, "latency": {"b1": 0.50, "b256": 0.40}},
]


@pytest.mark.parametrize("cost, tolerance, kept", [
    ("flops", 0.01, 3),  # the leanest within 1 point
    ("latency", 0.01, 2),  # k=2: max(0.90, 0.85) = 0.90 beats k=3's max(0.80, 0.92) = 0.92
    ("latency", 0.0, 1),  # only k=0 and k=1 reach 0.99: k=1 is faster
    ("latency", 0.2, 4),  # everything within tolerance: the fastest
])
def test_cost_latency_keeps_the_fastest_within_tolerance(cost, tolerance, kept):
    from assembler.train.tailor import choose
    assert choose(LATENCY_ROWS, 0.99, tolerance, cost)["k"] == kept


def test_cost_latency_treats_an_unmeasured_candidate_as_slowest():
    from assembler.train.tailor import choose
    rows = [dict(LATENCY_ROWS[2], latency=None), LATENCY_ROWS[1]]
    assert choose(rows, 0.99, 0.01, "latency")["k"] == 1


def test_a_kept_network_with_fewer_flops_but_slower_is_reported():
    from assembler.train.tailor import slower_note
    summary = {"tailor": LATENCY_ROWS, "teacher_flops": 100, "chosen_k": 1, "cost": "flops"}
    assert slower_note(summary) == (
        "the kept network (k=1) has 80.0% of the teacher's FLOPs but runs 1.10x its time at batch 1 on this CPU "
        "(both inference-compiled): each operator call costs about as much as a small layer's arithmetic, and the "
        "proxies' pools are memory-bound; cost=\"latency\" keeps the fastest network within tolerance instead")
    assert slower_note(dict(summary, chosen_k=2)) is None  # faster at both batch sizes
    assert slower_note(dict(summary, chosen_k=0)) is None  # as many FLOPs as the teacher: nothing promised
    assert slower_note(dict(summary, tailor=[dict(LATENCY_ROWS[1], latency=None)])) is None  # not measured


def test_cost_latency_keeps_what_choose_picks_from_the_recorded_candidates(work):
    """Training with cost="latency": the kept k (chosen candidate by candidate, as each is
    retrained) is the one `choose` picks from all the recorded rows, and the metrics say which
    rule chose it (threshold 0 keeps every proxy, so that each k leaves a network)."""
    from assembler.train.tailor import choose
    r = CliRunner().invoke(main, ["train", "tailor.net", "--network", "student", "--out", "fast", "-q",
                                  "--set", "epochs=1", "--set", "procedure.retrain_epochs=1",
                                  "--set", "procedure.blocks=[0, 1, 2]", "--set", 'procedure.cost="latency"',
                                  "--set", "procedure.tolerance=0.5", "--set", "procedure.threshold=0"])
    assert r.exit_code == 0, r.output
    final = json.loads((work / "fast/metrics.jsonl").read_text().splitlines()[-1])
    assert final["cost"] == "latency" and all(row["latency"] for row in final["tailor"] if "skipped" not in row)
    assert len([row for row in final["tailor"] if "skipped" not in row]) == 3  # all within tolerance 0.5: time decides
    assert final["chosen_k"] == choose(final["tailor"], final["teacher_val_accuracy"], 0.5, "latency")["k"]


def test_cost_latency_without_the_measurement_is_a_located_check_error(tmp_path):
    shutil.copy(SPECS / "source.net", tmp_path / "source.net")
    (tmp_path / "s.net").write_text(IMPORTED_TEACHER.replace("latency=false)", 'latency=false, cost="latency")'))
    r = CliRunner().invoke(main, ["check", str(tmp_path / "s.net")])
    assert r.exit_code == 1
    assert ('s.net:14:95: error: nettailor: cost="latency" chooses by measured latency, but latency=false turns the '
            "measurement off") in r.output and 'hint: set latency=true, or cost="flops"' in r.output
