"""The trainer end to end: accuracy on the digits, imports trained first, determinism,
interrupt and resume, NaN, --set, the frozen-prefix cache and torchrun."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import SPECS, cli, run, torchrun_cmd
import assembler



def weights_equal(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_source_reaches_097_on_digits_0_to_4(work):
    code, out, err = cli("train", "source.net", "--out", "runs", "-q")
    assert code == 0, err
    code, out, err = cli("eval", "runs/cnn", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["accuracy"] >= 0.97 and result["samples"] == 226
    lines = [json.loads(x) for x in (work / "runs/cnn/metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(1, 11))
    assert {"loss", "ce", "train_accuracy", "test_accuracy", "seconds"} <= lines[-1].keys()
    meta = json.loads((work / "runs/cnn/meta.json").read_text())
    assert meta["settings"]["epochs"] == 10 and meta["train"]["complete"]


def test_teacher_trains_the_imported_source_first(work):
    code, out, err = cli("train", "tailor.net", "--network", "teacher", "--out", "t", "-q")
    assert code == 0, err
    result = json.loads(cli("eval", "t", "--json")[1])
    assert result["accuracy"] >= 0.95
    # the import was trained and cached, so the teacher's copies started from trained blocks
    assert assembler.checkpoint.trained_checkpoint(work / "source.net") is not None


def test_same_seed_same_weights_and_set_overrides(work):
    for out in ("a", "b"):
        code, _, err = cli("train", "source.net", "--set", "epochs=2", "--set", "optimizer=adam(lr=0.003)",
                           "--out", out, "-q")
        assert code == 0, err
    assert weights_equal(work / "a/cnn", work / "b/cnn")
    meta = json.loads((work / "a/cnn/meta.json").read_text())
    assert meta["settings"]["epochs"] == 2 and meta["settings"]["optimizer"]["name"] == "adam"


def test_bad_set_is_named(work):
    code, _, err = cli("train", "source.net", "--set", "epochs=ten", "-q")
    assert code == 1
    assert err.startswith("--set epochs=ten: error: setting 'epochs' must be a whole number")
    code, _, err = cli("train", "source.net", "--set", "epoch=3", "-q")
    assert code == 1 and "did you mean 'epochs'?" in err


def test_nan_loss_stops_with_a_clear_error(work):
    code, _, err = cli("train", "source.net", "--set", "optimizer=sgd(lr=1e30)", "--set", "epochs=3",
                       "--out", "n", "-q")
    assert code == 1
    assert "the loss became" in err and "lower the learning rate" in err


def _run(args, cwd, fault: str | None = None, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault:
        env["ASSEMBLER_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "assembler", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def printed_command(stderr: str) -> list[str]:
    """The resume command an interrupted run printed, ready to run as printed."""
    line = next(x for x in stderr.splitlines() if "continue with:" in x)
    words = shlex.split(line.split("continue with:", 1)[1])
    assert words[0] == "assembler"
    return [str(Path(sys.executable).with_name("assembler"))] + words[1:]


def test_interrupt_then_resume_equals_an_uninterrupted_run(work):
    args = ["train", "source.net", "--set", "epochs=4", "--set", "batch=16"]
    full = _run(args + ["--out", "full"], work)
    assert full.wait(timeout=300) == 0, full.stderr.read()
    p = _run(args + ["--out", "cut"], work, fault="sigint@0:1:20")  # a real SIGINT inside epoch 2
    rest = p.stderr.read()
    assert p.wait(timeout=120) == 130, rest
    meta = json.loads((work / "cut/cnn/meta.json").read_text())
    assert not meta["train"]["complete"] and (meta["train"]["epoch"], meta["train"]["step"]) == (1, 21)
    r = subprocess.run(printed_command(rest), cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert weights_equal(work / "full/cnn", work / "cut/cnn")
    lines = (work / "cut/cnn/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]


def test_frozen_prefix_cache_gives_the_same_weights(work):
    spec = assembler.load(work / "tailor.net")
    results = []
    for use_cache in (True, False):
        from assembler.train.trainer import Trainer
        asm = assembler.compile(spec)
        section = next(t for t in asm.checked.trains if t.networks == ("student",))
        section = section.model_copy(update={"settings": {**section.settings, "epochs": 1,
                                                          "procedure": {"name": "finetune", "args": {}}}})
        trainer = Trainer(asm, section, None, base_dir=work, quiet=True, use_cache=use_cache)
        trainer.run()
        results.append({k: v.clone() for k, v in asm.state().items()})
        assert trainer.cached_prefix == use_cache
    a, b = results
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_distill_trains_against_a_teacher(work):
    (work / "kd.net").write_text(
        "network big(x: [1, 8, 8]) {\n    h = x -> conv(16, 3, pad=1) -> relu -> gap -> linear(5)\n    return h\n}\n"
        "network small(x: [1, 8, 8]) {\n    h = x -> conv(4, 3, pad=1) -> relu -> gap -> linear(5)\n    return h\n}\n"
        "train big {\n    data = digits(classes=[0, 1, 2, 3, 4])\n    epochs = 2\n}\n"
        "train small {\n    procedure = distill(teacher=big, temperature=2)\n"
        "    data = digits(classes=[0, 1, 2, 3, 4])\n    epochs = 2\n}\n")
    code, _, err = cli("train", "kd.net", "--out", "kd", "-q")
    assert code == 0, err
    last = json.loads((work / "kd/small/metrics.jsonl").read_text().splitlines()[-1])
    assert {"ce", "kd"} <= last.keys() and last["kd"] > 0


def test_torchrun_two_processes(work):
    r = run(torchrun_cmd("train", "source.net", "--set", "epochs=2", "--out", "ddp", "-q"), work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("cnn: test accuracy") == 1  # rank 0 alone reports and writes
    lines = [json.loads(x) for x in (work / "ddp/cnn/metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[-1]["train_accuracy"] > 0.5


def test_the_frozen_prefix_and_its_suffix_are_valid_networks():
    from assembler.train.prefix import split
    from assembler.verify import network_problems
    asm = assembler.compile(assembler.load(SPECS / "tailor.net"), imports=False)
    prefix, suffix, frontier = split(asm.checked.networks["student"])
    assert frontier and set(suffix.inputs) == set(frontier) and prefix.outputs == tuple(frontier)
    for part in (prefix, suffix):
        assert network_problems(part, asm.checked.modules) == []
