"""Checkpoints that travel and survive: imports by content id (copied, bundled, new cache),
crash-safe replacement (an injected crash between the renames, debris cleaned), verified
resume, meta.json checked field by field, dtypes, a writer's lock, permissions."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import SPECS, assembler_cmd, cli, run
import assembler
from assembler.atomic import lock
from assembler.errors import CheckpointError


USER = """\
use "pre" as p

network s(x: [1, 8, 8]) {
    f = x -> p.c1..c2
    y = f -> conv(8, 3, pad=1) -> relu -> gap -> linear(5)
    return y
}

train s {
    data = digits(classes=[5, 6, 7, 8, 9], per_class=10)
    epochs = 2
}
"""


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A checkpoint `o/s` that imports the checkpoint `pre` (source.net's cnn)."""
    monkeypatch.chdir(tmp_path)
    assembler.save(assembler.compile(assembler.load(SPECS / "source.net"), seed=3), tmp_path / "pre")
    (tmp_path / "user.net").write_text(USER)
    code, _, err = cli("train", "user.net", "--out", "o", "-q")
    assert code == 0, err
    return tmp_path / "o" / "s"


def test_a_checkpoint_imports_by_content_id(trained):
    text = (trained / "spec.net").read_text()
    meta = json.loads((trained / "meta.json").read_text())
    cid = meta["imports"]["p"]["id"]
    assert f'use "sha256:{cid}" as p' in text and '"../' not in text


def test_a_copied_checkpoint_evaluates_elsewhere(trained, tmp_path, monkeypatch):
    deep = tmp_path / "a" / "b" / "c" / "copy"
    shutil.copytree(trained, deep)
    monkeypatch.chdir(tmp_path / "a")
    code, out, err = cli("eval", str(deep), "--json")
    assert code == 0, err


def test_a_bundle_travels_alone_to_a_new_cache(trained, tmp_path, monkeypatch):
    code, out, err = cli("bundle", str(trained), "-o", str(tmp_path / "bundle"))
    assert code == 0, err
    assert "1 imported checkpoint" in out
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(tmp_path / "bundle", moved)
    shutil.rmtree(tmp_path / "pre")  # the original import is gone too
    monkeypatch.setenv("ASSEMBLER_CACHE", str(tmp_path / "new-cache"))
    code, out, err = cli("eval", str(moved), "--json")
    assert code == 0, err
    plain = tmp_path / "plain"
    shutil.copytree(trained, plain)
    code, _, err = cli("eval", str(plain))
    assert code == 1 and "cannot find the import 'p'" in err and "assembler bundle" in err


def test_assembler_path_finds_an_import_under_any_name(trained, tmp_path, monkeypatch):
    """$ASSEMBLER_PATH folders are searched for the import's content id: a folder named by
    the id, or a checkpoint under any name (here `pre`, as it was saved)."""
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(trained, moved)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.move(tmp_path / "pre", shelf / "pre")
    (shelf / "junk").mkdir()  # folders that are not checkpoints are passed over
    monkeypatch.setenv("ASSEMBLER_CACHE", str(tmp_path / "new-cache"))
    code, _, err = cli("eval", str(moved))
    assert code == 1 and "cannot find the import 'p'" in err
    monkeypatch.setenv("ASSEMBLER_PATH", str(shelf))
    code, out, err = cli("eval", str(moved), "--json")
    assert code == 0, err


def test_a_checkpoint_spec_imports_by_id_only(trained, tmp_path):
    spec = trained / "spec.net"
    spec.write_text(spec.read_text().replace(spec.read_text().split('"')[1], "../../../../etc/passwd"))
    with pytest.raises(assembler.SpecError) as e:
        assembler.load(trained)
    assert "imports by content id, not by the path" in e.value.render() and "root:" not in e.value.render()


def _train_with_fault(cwd, out, fault, **env):
    return run(assembler_cmd("train", "user.net", "--out", out, "-q", "--set", "epochs=3"), cwd, fault=fault,
               ASSEMBLER_NO_EXCHANGE="1", **env)


def test_a_crash_between_the_renames_loses_nothing(trained, tmp_path):
    ok = run(assembler_cmd("train", "user.net", "--out", "full", "-q", "--set", "epochs=3"), tmp_path)
    assert ok.returncode == 0, ok.stderr
    # the second save of a run replaces the first: crash between its two renames
    crashed = _train_with_fault(tmp_path, "cut", "exit@swap")
    assert crashed.returncode == 137
    names = sorted(p.name for p in (tmp_path / "cut").iterdir())
    assert "s" not in names and any(".old-" in n for n in names) and any(n.endswith(".tmp") for n in names)
    code, out, err = cli("eval", "cut/s", "--json")  # recovered on open: the newest complete copy
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "cut").iterdir() if p.is_dir()) == ["s"]  # debris gone
    assert json.loads((tmp_path / "cut/s/meta.json").read_text())["train"]["epoch"] == 2
    r = run(assembler_cmd("train", "user.net", "--out", "cut", "-q", "--set", "epochs=3", "--resume"), tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(tmp_path / "full/s/weights.safetensors")), load_file(str(tmp_path / "cut/s/weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_a_crash_recovers_and_says_so(trained, tmp_path):
    crashed = _train_with_fault(tmp_path, "cut", "exit@swap")
    assert crashed.returncode == 137
    r = run(assembler_cmd("train", "user.net", "--out", "cut", "--set", "epochs=3", "--resume"), tmp_path)
    assert r.returncode == 0 and "recovered cut/s from a save that a crash interrupted" in r.stderr


def test_debris_of_a_crash_after_the_swap_is_cleaned(trained, tmp_path):
    crashed = run(assembler_cmd("train", "user.net", "--out", "x", "-q", "--set", "epochs=2"), tmp_path,
                  fault="exit@swapped")
    assert crashed.returncode == 137
    assert any(p.name.endswith(".tmp") or ".old-" in p.name for p in (tmp_path / "x").iterdir())
    assembler.restore(tmp_path / "x" / "s")
    assert sorted(p.name for p in (tmp_path / "x").iterdir() if p.is_dir()) == ["s"]


def test_resume_of_a_finished_run_verifies_it(trained, tmp_path):
    w = trained / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x55
    w.write_bytes(bytes(data))
    code, _, err = cli("train", "user.net", "--out", "o", "--resume", "-q")
    assert code == 1 and "does not match its hash" in err


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(seed="7"), "'seed': Input should be a valid integer"),
    (lambda m: m.update(hashes=[1, 2]), "'hashes': Input should be a valid dictionary"),
    (lambda m: m["hashes"].update({"/etc/passwd": "0" * 64}), "'hashes./etc/passwd.[key]'"),
    (lambda m: m.update(train={"epoch": -1}), "'train.epoch'"),
    (lambda m: m.update(imports={"p": {"id": 5}}), "'imports.p.id'"),
    (lambda m: m.pop("hashes"), "'hashes': Field required"),
    (lambda m: m.update(format="x"), "is not an assembler checkpoint"),
])
def test_a_damaged_meta_json_is_a_checkpoint_error(trained, edit, words):
    meta = json.loads((trained / "meta.json").read_text())
    edit(meta)
    raw = (json.dumps(meta) + "\n").encode()
    (trained / "meta.json").write_bytes(raw)
    (trained / "meta.json.sha256").write_text(assembler.checkpoint.sha256(trained / "meta.json"))
    code, _, err = cli("eval", str(trained))
    assert code == 1 and words in err, err


def test_meta_json_is_covered_by_its_hash(trained):
    meta = trained / "meta.json"
    meta.write_text(meta.read_text().replace('"seed": 0', '"seed": 1'))
    code, _, err = cli("eval", str(trained))
    assert code == 1 and "meta.json does not match its hash in meta.json.sha256" in err


@pytest.mark.parametrize("text", ["[" * 100_000, "{" + '"a": ' * 50_000 + "1"])
def test_unreadable_meta_json_is_an_error(trained, text):
    (trained / "meta.json").write_text(text)
    code, _, err = cli("eval", str(trained))
    assert code == 1 and "meta.json" in err


@pytest.mark.parametrize("dtype", [torch.float64, torch.int8, torch.bool, torch.float16])
def test_weights_of_another_dtype_are_refused(trained, dtype):
    w = trained / "weights.safetensors"
    tensors = load_file(str(w))
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, str(w))
    meta = json.loads((trained / "meta.json").read_text())
    meta["hashes"]["weights.safetensors"] = assembler.checkpoint.sha256(w)
    (trained / "meta.json").write_text(json.dumps(meta))
    (trained / "meta.json.sha256").write_text(assembler.checkpoint.sha256(trained / "meta.json"))
    with pytest.raises(CheckpointError) as e:
        assembler.restore(trained)
    assert f"tensor '{key}' is {str(dtype).replace('torch.', '')} but" in e.value.message


def test_paths_that_are_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    code, _, err = cli("eval", "f.txt")
    assert code == 1 and "not a checkpoint: f.txt is a file" in err
    code, _, err = cli("eval", "loop")
    assert code == 1 and "not a checkpoint" in err


def test_a_second_writer_is_refused_naming_the_first(trained, tmp_path):
    with lock(tmp_path / "busy" / "s", "a test"):
        code, _, err = cli("train", "user.net", "--out", "busy", "-q")
    assert code == 1 and "busy/s is being written by process" in err and "a test" in err


def test_one_sample_trains_nothing_and_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "one.npz", x=np.zeros((1, 1, 8, 8), np.float32), y=np.zeros(1, np.int64))
    (tmp_path / "one.net").write_text(USER.replace('use "pre" as p\n\n', "").replace("p.c1..c2", "conv(4, 3)")
                                      .replace('digits(classes=[5, 6, 7, 8, 9], per_class=10)', 'npz("one.npz")'))
    code, _, err = cli("train", "one.net", "--out", "o", "-q")
    assert code == 1 and "makes no batch of 2 or more samples" in err


def test_files_are_written_with_the_umask(trained, tmp_path):
    old = os.umask(0o022)
    try:
        out = assembler.save(assembler.restore(trained), tmp_path / "perm")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o644}


def test_two_runs_that_need_one_import_train_it_once(tmp_path):
    """Two processes started together, each training a spec that imports an untrained spec:
    the import is trained once (the second waits on the cache entry's lock, then reuses it)."""
    import subprocess
    shutil.copy(SPECS / "source.net", tmp_path / "source.net")
    (tmp_path / "user.net").write_text(USER.replace('use "pre" as p', 'use "source.net" as p'))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ASSEMBLER_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.Popen(assembler_cmd("train", "user.net", "--out", f"o{i}"), cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outputs = [r.communicate(timeout=600) for r in runs]
    assert all(r.returncode == 0 for r in runs), outputs
    assert sum(err.count("training the imported spec source.net") for _, err in outputs) == 1, outputs
