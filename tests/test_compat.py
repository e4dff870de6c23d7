"""The `compat` procedure (paper 002): label mapping through class names, rotation targets,
eq. 1-2 against a hand computation on the spec's own networks, alternating minibatches, IIW,
frozen heads in the incremental schedule, recombination accuracy (an oracle with hand-set
weights), bit-identical resume after a real SIGINT in each stage, the CLI end to end."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

import assembler
from conftest import assembler_cmd, run, same_run
from assembler.cli import main
from assembler.data import Dataset
from assembler.train import recombination as rc
from assembler.train.compat import rotations
from assembler.train.trainer import Trainer

NETS = """\
block extractor = conv(8, 3, pad=1) -> {bn}relu -> maxpool(2)
block head(n) = conv(8, 3, pad=1) -> {bn}relu -> gap -> linear(n)

shared rot = head(4)
shared dcc = head(3)

network a(x: [1, 8, 8]) {{
    f = x -> extractor
    y = f -> head(5)
    r = f -> rot
    d = f -> dcc
    return y, r, d
}}

network b(x: [1, 8, 8]) {{
    f = x -> extractor
    y = f -> head(5)
    r = f -> rot
    d = f -> dcc
    return y, r, d
}}

network ab(x: [1, 8, 8]) {{
    y = x -> a.f -> b.y
    return y
}}

train a, b {{
    procedure = compat(aux=[rot, dcc], schedule="{schedule}", iiw={iiw})
    data = [digits(classes=[0, 1, 2, 3, 4], per_class=12), digits(classes=[6, 4, 2, 3, 5], per_class=12, invert=true)]
    optimizer = sgd(lr=0.05, momentum=0.9)
    epochs = 2
    batch = 16
}}
"""


def spec_text(schedule="joint", iiw=True, bn=True) -> str:
    return NETS.format(schedule=schedule, iiw="true" if iiw else "false", bn="batchnorm -> " if bn else "")


def trainer(text: str, tmp_path: Path) -> Trainer:
    asm = assembler.compile(assembler.parse(text, "t.net"))
    return Trainer(asm, asm.checked.trains[0], None, base_dir=tmp_path, quiet=True)


def own_state(asm, net: str) -> dict[str, torch.Tensor]:
    return {k[len(net) + 1:]: v.clone() for k, v in asm.state().items() if k.startswith(net + ".")}


def head_state(asm) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in asm.state().items() if k.startswith(("rot.", "dcc."))}


# -- labels and rotations ---------------------------------------------------------------------------


def test_labels_map_into_the_common_index_through_class_names():
    common = ["3", "4", "5", "6"]
    a_names = ["6", "0", "5", "3", "4", "1", "2"]  # classes=[6, 0, 5, 3, 4, 1, 2]: label 0 is the digit 6
    assert rc.label_map(a_names, common).tolist() == [3, -1, 2, 0, 1, -1, -1]
    b_names = ["9", "3", "8", "4", "7", "5", "6"]
    assert rc.columns(b_names, common).tolist() == [1, 3, 5, 6]
    ds = assembler.data.digits(split="test", classes=[6, 0, 5, 3])
    x, target = rc.common_samples(ds, common)
    digit = torch.tensor([6, 0, 5, 3])[ds.y]  # the original digits, by hand
    assert sorted(target.tolist()) == sorted((digit[digit != 0] - 3).tolist())
    assert len(x) == int((digit != 0).sum()) and len(set(target[:20].tolist())) > 1  # shuffled, not by class


def test_rotation_targets_are_the_quarter_turns_in_order():
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    xs, ys = rotations(torch.cat([img, img + 10]))
    assert ys.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    turned = {1: [[2.0, 4.0], [1.0, 3.0]], 2: [[4.0, 3.0], [2.0, 1.0]], 3: [[3.0, 1.0], [4.0, 2.0]]}  # counter-clockwise
    assert torch.equal(xs[0, 0], img[0, 0]) and torch.equal(xs[1, 0], img[0, 0] + 10)
    for k, want in turned.items():
        assert xs[2 * k, 0].tolist() == want and torch.equal(xs[2 * k + 1], xs[2 * k] + 10)


# -- the loss and the step ---------------------------------------------------------------------------


def by_hand(asm, net: str, x, y, common_of_label: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2 for one task, from the spec's whole network (outputs y, r, d) on each input."""
    gm = asm.network(net)
    logits, _, d = gm(x)
    rp = sum(F.cross_entropy(gm(torch.rot90(x, k, dims=(2, 3)))[1], torch.full((len(x),), k)) for k in range(4)) / 4
    target = common_of_label[y]
    keep = target >= 0
    dcc = F.cross_entropy(d[keep], target[keep], reduction="sum") / len(y)
    return F.cross_entropy(logits, y) + rp + dcc


def test_task_loss_is_eq_1_and_2(tmp_path):
    tr = trainer(spec_text(bn=False), tmp_path)  # no batch-norm: a whole-network pass is the oracle
    proc = tr.procedure
    proc.setup()
    proc.ctx.stage = tr.stages[0]
    assert proc.common == ["2", "3", "4"] and proc.rotation == ["rot"] and proc.dcc == ["dcc"]
    (xa, ya), (xb, yb) = (tr.ctx.train_data[i][:16] for i in range(2))
    # b's labels index the digits [6, 4, 2, 3, 5]; the common classes are the digits 2, 3, 4
    assert proc.maps["a"].tolist() == [-1, -1, 0, 1, 2] and proc.maps["b"].tolist() == [-1, 2, 0, 1, -1]
    for net, x, y in (("a", xa, ya), ("b", xb, yb)):
        loss, terms, _ = proc.task_loss(net, x, y)
        assert torch.allclose(loss, by_hand(tr.asm, net, x, y, proc.maps[net]), atol=1e-6)
        assert set(terms) == {"ce", "rot", "dcc"}


def test_the_rotated_images_leave_the_extractors_running_statistics_alone(tmp_path):
    tr, twin = trainer(spec_text(), tmp_path), trainer(spec_text(), tmp_path)
    tr.procedure.setup()
    tr.procedure.ctx.stage = tr.stages[0]
    x, y = tr.ctx.train_data[0][:16]
    tr.procedure.task_loss("a", x, y)
    twin.asm.network("a", taps=["f"])(x)  # one pass over the upright batch only
    for key in ("a.f.0.1.running_mean", "a.f.0.1.running_var"):
        assert torch.equal(tr.asm.state()[key], twin.asm.state()[key])


def test_a_joint_step_alternates_one_sgd_step_per_task(tmp_path):
    """One step = an SGD step on a's minibatch, then one on b's (the shared heads move twice);
    summing both tasks' losses into one step gives other shared heads."""
    tr, twin, summed = (trainer(spec_text(bn=False), tmp_path) for _ in range(3))
    for t in (tr, twin, summed):
        t.procedure.setup()
        t.procedure.ctx.stage = t.stages[0]
    batch = [tr.ctx.train_data[i][:16] for i in range(2)]
    opt = lambda t: torch.optim.SGD(t.procedure.optimizers(t.stages[0])["model"].groups, lr=0.1, momentum=0.9)  # noqa: E731
    tr.procedure.step(batch, {"model": opt(tr)})
    o = opt(twin)
    for net, (x, y) in zip("ab", batch):
        o.zero_grad(set_to_none=True)
        by_hand(twin.asm, net, x, y, twin.procedure.maps[net]).backward()
        o.step()
    o = opt(summed)
    o.zero_grad(set_to_none=True)
    sum(by_hand(summed.asm, n, x, y, summed.procedure.maps[n]) for n, (x, y) in zip("ab", batch)).backward()
    o.step()
    got, want, other = tr.asm.state(), twin.asm.state(), summed.asm.state()
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in got)
    assert not all(torch.allclose(got[k], other[k], atol=1e-6) for k in got if k.startswith("rot."))


# -- IIW and the incremental schedule -----------------------------------------------------------------


def test_iiw_gives_every_network_the_first_ones_initial_weights(tmp_path):
    tr = trainer(spec_text(iiw=True), tmp_path)
    a0 = own_state(tr.asm, "a")
    assert own_state(tr.asm, "a").keys() == own_state(tr.asm, "b").keys()
    assert not all(torch.equal(a0[k], own_state(tr.asm, "b")[k]) for k in a0 if k.endswith("weight"))
    tr.procedure.initialize()
    b = own_state(tr.asm, "b")
    assert all(torch.equal(a0[k], b[k]) for k in a0) and all(torch.equal(a0[k], v) for k, v in own_state(tr.asm, "a").items())
    plain = trainer(spec_text(iiw=False), tmp_path)
    plain.procedure.initialize()
    assert not torch.equal(own_state(plain.asm, "a")["f.0.0.weight"], own_state(plain.asm, "b")["f.0.0.weight"])


def test_incremental_stage_two_trains_b_against_frozen_heads(tmp_path):
    tr = trainer(spec_text(schedule="incremental"), tmp_path)
    assert [s.name for s in tr.stages] == ["train-a", "train-b"]
    seen = {}
    exit_ = tr.procedure.exit

    def snapshot(stage):
        seen[stage.name] = (head_state(tr.asm), own_state(tr.asm, "a"), own_state(tr.asm, "b"))
        exit_(stage)
    tr.procedure.exit = snapshot
    tr.run()
    heads, a_after_1, b_after_1 = seen["train-a"]
    _, a_after_2, b_after_2 = seen["train-b"]
    assert all(torch.equal(v, head_state(tr.asm)[k]) for k, v in heads.items())  # weights and running statistics
    assert all(torch.equal(v, a_after_2[k]) for k, v in a_after_1.items())
    assert not torch.equal(b_after_1["f.0.0.weight"], b_after_2["f.0.0.weight"])
    ids = {id(p) for p in tr.procedure.optimizers(tr.stages[1])["model"].groups[0]["params"]}
    assert ids == {id(p) for k, p in tr.asm.named_parameters("b").items() if not k.startswith(("rot.", "dcc."))}
    last = tr.state.history[-1]
    assert last["stage"] == "train-b" and set(last["recombination"]["pairs"]) == {"a.f -> b.y", "b.f -> a.y"}
    assert "recombination" not in tr.state.history[0]  # stage 1: b is not trained yet


# -- recombination accuracy ----------------------------------------------------------------------------

ORACLE = """\
network a(x: [10]) {
    f = x -> linear(10)
    y = f -> linear(4)
    return y
}

network b(x: [10]) {
    f = x -> linear(10)
    y = f -> linear(3)
    return y
}
"""


def one_hot_data(digits: list[int], order: list[int]) -> Dataset:
    """Samples that say their digit: x = one_hot(digit); labels index `order`."""
    x = F.one_hot(torch.tensor(digits), 10).float()
    return Dataset(x, torch.tensor([order.index(d) for d in digits]), len(order), "oh", [str(d) for d in order])


def test_recombination_maps_heads_and_labels_by_class_name():
    """Identity extractors, heads that read the digit off the features: every pair is right
    exactly when labels and head columns are matched by class name."""
    asm = assembler.compile(assembler.parse(ORACLE))
    orders = {"a": [0, 3, 5, 4], "b": [5, 4, 9]}
    with torch.no_grad():
        for net, order in orders.items():
            asm.modules[f"{net}.f.0"].weight.copy_(torch.eye(10))
            asm.modules[f"{net}.f.0"].bias.zero_()
            asm.modules[f"{net}.y.0"].weight.copy_(torch.eye(10)[order])
            asm.modules[f"{net}.y.0"].bias.zero_()
    from assembler.checks.compat import split_network
    parts = rc.Parts(asm)
    tasks = [rc.Task(split_network(asm.checked.networks[n], []), one_hot_data(d, orders[n]), [str(c) for c in orders[n]])
             for n, d in (("a", [0, 3, 5, 4, 5, 4] * 3), ("b", [5, 4, 9, 9] * 3))]
    got = rc.report(parts, tasks, ["4", "5"], batch=4)
    assert got["chance"] == 0.5 and got["classes"] == ["4", "5"]
    assert got["pairs"]["a.f -> b.y"]["samples"] == 12 and got["pairs"]["b.f -> a.y"]["samples"] == 6
    assert all(row[m] == 1.0 for row in [*got["pairs"].values(), *got["originals"].values()] for m in rc.MODES)
    with torch.no_grad():  # b's head now reads 4 where it says 5 and the other way round
        asm.modules["b.y.0"].weight.copy_(torch.eye(10)[[4, 5, 9]])
    assert rc.report(parts, tasks, ["4", "5"], batch=4)["pairs"]["a.f -> b.y"]["running"] == 0.0


def test_batch_statistics_mode_keeps_running_statistics_and_modes(tmp_path):
    tr = trainer(spec_text(), tmp_path)
    tr.procedure.setup()
    model = rc.Composed(tr.procedure.parts.extractor(tr.procedure.splits["a"]), tr.procedure.parts.head(tr.procedure.splits["b"]))
    before = tr.asm.state()
    before = {k: v.clone() for k, v in before.items()}
    model.train()
    tr.asm.network("b").eval()
    modes = {m: m.training for m in model.modules()}
    x, target = rc.common_samples(tr.ctx.test_data[0], ["2", "3", "4"])
    cols = rc.columns(tr.procedure.head_names["b"], ["2", "3", "4"])
    batch = rc.accuracy(model, x, target, cols, "batch", 16)
    running = rc.accuracy(model, x, target, cols, "running", 16)
    assert 0.0 <= batch <= 1.0 and 0.0 <= running <= 1.0
    assert all(torch.equal(v, tr.asm.state()[k]) for k, v in before.items())
    assert modes == {m: m.training for m in model.modules()}


# -- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule, faults", [("joint", ["sigint@0:1:2"]),
                                              ("incremental", ["sigint@0:1:1", "sigint@1:0:2"])])
def test_interrupted_in_each_stage_resumes_bit_identically(tmp_path, schedule, faults):
    (tmp_path / "c.net").write_text(spec_text(schedule=schedule, iiw=True))
    full = run(assembler_cmd("train", "c.net", "--out", "full", "-q"), tmp_path)
    assert full.returncode == 0, full.stderr
    for i, fault in enumerate(faults):
        out = f"cut{i}"
        cut = run(assembler_cmd("train", "c.net", "--out", out), tmp_path, fault=fault)
        assert cut.returncode == 130, cut.stderr
        words = shlex.split(next(x for x in cut.stderr.splitlines() if "continue with:" in x).split("continue with:")[1])
        stage, epoch, _ = (int(v) for v in fault.split("@")[1].split(":"))
        meta = json.loads((tmp_path / out / "a" / "meta.json").read_text())["train"]
        assert (meta["stage"], meta["epoch"], meta["complete"]) == (stage, epoch, False)
        if schedule == "incremental" and stage == 0:  # b is still at a's initial weights (IIW), saved
            init = assembler.compile(assembler.parse(spec_text(schedule=schedule)), seed=0).state()
            saved = load_file(str(tmp_path / out / "a" / "weights.safetensors"))
            assert all(torch.equal(saved["b" + k[1:]], init[k]) for k in init if k.startswith("a."))
        again = run(assembler_cmd(*words[1:]), tmp_path)
        assert again.returncode == 0, again.stderr
        same_run(tmp_path / "full" / "a", tmp_path / out / "a")
    last = json.loads((tmp_path / "full/a/metrics.jsonl").read_text().splitlines()[-1])
    rec = last["recombination"]
    assert set(rec["pairs"]) == {"a.f -> b.y", "b.f -> a.y"} and set(rec["originals"]) == {"a", "b"}
    assert rec["classes"] == ["2", "3", "4"] and all(set(r) >= {"running", "batch"} for r in rec["pairs"].values())


@pytest.mark.parametrize("schedule", ["joint", "incremental"])
def test_trains_without_iiw_and_eval_reports_recombination(tmp_path, monkeypatch, schedule):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.net").write_text(spec_text(schedule=schedule, iiw=False).replace("epochs = 2", "epochs = 1"))
    r = CliRunner().invoke(main, ["train", "c.net", "--out", "o", "-q"])
    assert r.exit_code == 0, r.output
    history = [json.loads(x) for x in (tmp_path / "o/a/metrics.jsonl").read_text().splitlines()]
    assert history[-1]["recombination_batch"] == history[-1]["recombination"]["mean"]["batch"]
    r = CliRunner().invoke(main, ["eval", "o/a", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    logged = history[-1]["recombination"]
    for key, row in got["recombination"]["pairs"].items():
        assert abs(row["batch"] - logged["pairs"][key]["batch"]) < 1e-5
        assert abs(row["running"] - logged["pairs"][key]["running"]) < 1e-5
    ab = json.loads(CliRunner().invoke(main, ["eval", "o/a", "--network", "ab", "--json"]).stdout)
    assert ab["data"].startswith("digits(split=\"test\", classes=[6, 4, 2, 3, 5]")  # its head's task: b's data
    pair = got["recombination"]["pairs"]["a.f -> b.y"]
    assert ab["recombined"] == {"extractor": "a", "head": "b", **{k: pair[k] for k in ("samples", "running", "batch")}}
    text = CliRunner().invoke(main, ["eval", "o/a"]).output
    assert "a.f -> b.y: accuracy" in text and "(batch statistics)" in text


def test_a_network_made_by_edits_recombine_is_measured_like_its_pair(tmp_path):
    from assembler import edits
    tr = trainer(spec_text().replace("epochs = 2", "epochs = 1"), tmp_path)
    tr.run()
    spec = edits.recombine(assembler.parse(spec_text(), "t.net"), extractor="b.f", head="a.y", name="ba")
    asm = assembler.compile(spec)
    for key, module in tr.asm.modules.items():
        asm.modules[key].load_state_dict(module.state_dict())
    assert rc.recombined_ends(asm, "ba", ["a", "b"]) == ("b", "a") and rc.recombined_ends(asm, "a", ["a", "b"]) is None
    proc = tr.procedure
    got = rc.recombined(asm.network("ba"), "b", "a", tr.ctx.test_data[1], proc.head_names["a"], proc.common, 16)
    pair = tr.state.history[-1]["recombination"]["pairs"]["b.f -> a.y"]
    assert got == {"extractor": "b", "head": "a", **{k: pair[k] for k in ("samples", "running", "batch")}}
