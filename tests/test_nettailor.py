"""NetTailor: E[C] against a hand computation, pruning of constructed alphas with cascades,
and the shared tailor.net example end to end (shortened)."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import assembler
from assembler.cli import main
from assembler.train.nettailor import ExpectedComplexity
from assembler.train.tailor import gate_paths, pruning_plan
from assembler.train.tailor import prune_assembly

SPECS = Path(__file__).resolve().parent.parent / "specs" / "digits"

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
    costs = {(p.binding, p.index): p.cost for p in gate_paths(net)}
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


def test_tailor_example_end_to_end(tmp_path, monkeypatch):
    for f in SPECS.glob("*.net"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.chdir(tmp_path)
    run = CliRunner()
    r = run.invoke(main, ["train", "tailor.net", "--network", "student", "--out", "tailored", "-q",
                          "--set", "epochs=2", "--set", "procedure.retrain_epochs=1", "--set", "procedure.blocks=[0, 2]"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "tailored/metrics.jsonl").read_text().splitlines()]
    final = lines[-1]
    assert final["stage"] == "final" and [row["k"] for row in final["tailor"]] == [0, 2]
    assert {"params", "flops", "accuracy", "removed_blocks"} <= final["tailor"][0].keys()
    assert {"ce", "complexity", "teacher"} <= lines[0].keys()
    text = (tmp_path / "tailored/spec.net").read_text()
    assert "skips" not in text
    for cmd in (["check", "tailored"], ["show", "tailored", "--json"], ["fmt", "--check", "tailored/spec.net"],
                ["graph", "tailored", "-n", "student", "-o", "t.svg"], ["eval", "tailored", "--json"]):
        r = run.invoke(main, cmd)
        assert r.exit_code == 0, (cmd, r.output)
    shown = json.loads(run.invoke(main, ["show", "tailored", "--json", "-n", "student"]).output)
    assert shown["student"]["flops"] == final["flops"]
    assert run.invoke(main, ["compile", "tailor.net", "-o", "init"]).exit_code == 0
    r = run.invoke(main, ["prune", "init", "-n", "student", "--threshold", "0.01", "--blocks", "1", "-o", "pruned"])
    assert r.exit_code == 0, r.output
    # at initialisation the 4-path gates' blocks are weakest (alpha 0.947): c3 comes first by name
    assert r.output.startswith("removed 1 path(s): c3.in0\n")
    r = run.invoke(main, ["prune", "init", "-n", "student", "--threshold", "0.5", "--blocks", "1", "-o", "p2"])
    assert r.exit_code == 1 and "would remove the output(s) logits" in r.output


def test_ctrl_c_while_retraining_a_pruned_network_resumes_as_printed(tmp_path):
    """A real SIGINT inside the fine-tuning of k=1 (stage 2): the checkpoint holds the pruned
    network, the printed command resumes it, and the result equals an uninterrupted run."""
    for f in SPECS.glob("*.net"):
        shutil.copy(f, tmp_path / f.name)
    args = ["train", "tailor.net", "--network", "student", "--set", "epochs=2", "--set", "procedure.retrain_epochs=1",
            "--set", "procedure.blocks=[0, 1]", "--set", "procedure.threshold=0.01"]
    exe = str(Path(sys.executable).with_name("assembler"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = subprocess.run([exe, *args, "--out", "full", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    cut = subprocess.run([exe, *args, "--out", "cut"], cwd=tmp_path, env={**env, "ASSEMBLER_FAULT": "sigint@2:0:1"},
                         capture_output=True, text=True)
    assert cut.returncode == 130, cut.stderr
    assert "saved cut;" in cut.stderr and "None" not in cut.stderr
    meta = json.loads((tmp_path / "cut/meta.json").read_text())
    assert meta["train"]["stage"] == 2 and not meta["train"]["complete"]
    assert "c" in (tmp_path / "cut/spec.net").read_text()
    words = shlex.split(cut.stderr.split("continue with:", 1)[1].splitlines()[0])
    again = subprocess.run([exe, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    for name in ("weights.safetensors", "spec.net"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "cut" / name).read_bytes()
