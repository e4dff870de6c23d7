"""Network transplanting on the digits: the paper's Table 2 (error against the number of labelled
samples per class) at digits scale, for direct-learn, distillation and back-distillation, with
1-layer and 3-layer conv+ReLU adapters.

Pre-trained networks: specs/digits/categories.net ("is it a 0?", "is it a 3?", each a category
module f and a task module). Two settings, each over the tasks c = 3 and c = 0 (one-vs-rest,
balanced training samples and balanced test sets, the digits test split):
  (a) "inside": the adapter inserted inside the network of c: f_c -> h -> g_c (g_S = g_T; the
      ideal adapter is the identity), teacher = the network of c;
  (b) "transplant": the category module of c feeds the other network's task module through
      the adapter: f_c -> h -> g_other, teacher = the network of c (transplant.net for c = 3).
Methods, training only h:
  direct-learn   `finetune` on n labelled samples per class;
  distill        `distill(teacher=..)` on the same samples: 0.5 CE + 0.5 T^2 KL(teacher, student)
                 on the outputs, T = 4 (the registered defaults; the paper's "distill" is a
                 cross-entropy between the outputs);
  back-distill   `backdistill(teacher=.., at=h)` (lam = 1, alpha = 1, one Gaussian projection per
                 sample) with CE on the same samples, and with n = 0: `ce=false` on
                 `noise(n=64)`, no image at all.
Every run: adam(lr=0.001), batch 64, the same number of epochs (default 150; every n here fits in
one or two batches), seeds 0..4 (the seed draws the samples, the adapter's initial weights, the
order and the projections; methods with the same seed share samples and initial weights, so the
differences are paired). Error = 1 - test accuracy after the last epoch, in %.

    python benchmarks/transplant_digits.py [--seeds 0 1 2 3 4] [--epochs 150] [--jobs 2] [--out runs/bench-transplant]
    python benchmarks/transplant_digits.py --render      # the tables again from the saved runs

Prints markdown tables (the mean over the two tasks, then each task) and writes
benchmarks/results/transplant_digits.json (every run's error, the cells, the wall time).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

import assembler
from assembler.train.run import ensure_trained, train_spec

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ROOT / "specs" / "digits" / "categories.net"
NAMES = {0: "zero", 3: "three"}
ADAPTERS = {1: "conv(32, 3, pad=1) -> relu",
            3: "conv(32, 3, pad=1) -> relu -> conv(32, 3, pad=1) -> relu -> conv(32, 3, pad=1) -> relu"}
SAMPLES = (0, 5, 10, 20, 50)
METHODS = ("direct-learn", "distill", "back-distill")

SPEC = """\
use "categories.net" as cats

network student(x: [1, 8, 8]) {{
    f = x -> cats.{category}.f
    adapter h = f -> {adapter}
    y = h -> cats.{task}.y
    return y
}}

train student {{
    procedure = {procedure}
    data = {data}
    test = digits(split="test", positive={c})
    optimizer = adam(lr=0.001)
    epochs = {epochs}
    batch = 64
    seed = {seed}
}}
"""


def spec_text(setting: str, c: int, layers: int, method: str, n: int, seed: int, epochs: int) -> str:
    other = 0 if c == 3 else 3
    teacher = f"cats.{NAMES[c]}"
    procedure = {"direct-learn": "finetune", "distill": f"distill(teacher={teacher})",
                 "back-distill": f"backdistill(teacher={teacher}, at=h, lam=1.0, ce={'false' if n == 0 else 'true'})"}
    data = f"noise(n=64, seed={seed})" if n == 0 else f'digits(split="train", positive={c}, per_class={n})'
    return SPEC.format(category=NAMES[c], task=NAMES[c if setting == "inside" else other], adapter=ADAPTERS[layers],
                       procedure=procedure[method], data=data, c=c, epochs=epochs, seed=seed)


def run(work: Path, text: str) -> float:
    """Train one spec in memory (no checkpoint); its test error in %."""
    path = work / f"run-{os.getpid()}.net"
    path.write_text(text)
    history = train_spec(assembler.load(path), quiet=True)["student"]
    return 100.0 * (1.0 - history[-1]["test_accuracy"])


def job(task: tuple) -> dict:
    work, epochs, (setting, c, layers, method, n, seed) = task
    torch.set_num_threads(1)
    err = run(work, spec_text(setting, c, layers, method, n, seed, epochs))
    return {"setting": setting, "task": c, "layers": layers, "method": method, "n": n, "seed": seed, "error": err}


def teacher_error(work: Path, c: int) -> float:
    from assembler import data
    from assembler.train.evaluation import evaluate
    path = work / "teachers.net"
    path.write_text('use "categories.net" as cats\n')
    gm = assembler.compile(assembler.load(path)).network(f"cats.{NAMES[c]}")
    return 100.0 * (1.0 - evaluate(gm, data.digits(split="test", positive=c), 256)["accuracy"])


def cells(seeds):
    for setting in ("inside", "transplant"):
        for c in (3, 0):
            for layers in (1, 3):
                for method in METHODS:
                    for n in SAMPLES:
                        if n == 0 and method != "back-distill":
                            continue
                        for seed in seeds:
                            yield setting, c, layers, method, n, seed


TASKS = ("mean", 3, 0)  # "mean": each seed's error averaged over the tasks 3 and 0


def summary(rows: list[dict], seeds) -> dict:
    """Per (setting, task, layers, method, n), task 3, 0 or "mean": the error per seed, its mean
    and sd over seeds."""
    table: dict = {}
    for r in rows:
        for task in ("mean", r["task"]):
            key = (r["setting"], task, r["layers"], r["method"], r["n"])
            table.setdefault(key, {}).setdefault(r["seed"], []).append(r["error"])
    out = {}
    for key, per_seed in table.items():
        errs = [statistics.mean(per_seed[s]) for s in seeds]
        out[key] = {"per_seed": errs, "mean": statistics.mean(errs), "sd": statistics.stdev(errs) if len(errs) > 1 else 0.0}
    return out


def paired(s: dict, where: tuple, a: tuple, b: tuple) -> tuple[float, float]:
    """Mean and sd over seeds of error(a) - error(b) (same seed: same samples and initial adapter)."""
    diffs = [x - y for x, y in zip(s[(*where, *a)]["per_seed"], s[(*where, *b)]["per_seed"])]
    return statistics.mean(diffs), (statistics.stdev(diffs) if len(diffs) > 1 else 0.0)


def table(s: dict, setting: str, task) -> list[str]:
    lines = ["| n per class | adapter | direct-learn | distill | back-distill | back-distill − direct-learn (paired) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for layers in (1, 3):
        for n in SAMPLES:
            row = [str(n), f"{layers}-layer"]
            for method in METHODS:
                cell = s.get((setting, task, layers, method, n))
                row.append("–" if cell is None else f"{cell['mean']:.1f} ± {cell['sd']:.1f}")
            other = ("direct-learn", 5 if n == 0 else n)
            m, sd = paired(s, (setting, task, layers), ("back-distill", n), other)
            row.append(f"{m:+.1f} ± {sd:.1f}" + (" (vs direct-learn n=5)" if n == 0 else ""))
            lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def markdown(s: dict, teachers: dict) -> str:
    lines = []
    for setting in ("inside", "transplant"):
        what = ("(a) adapter inside the network of c (g_S = g_T)" if setting == "inside"
                else "(b) transplant: f of c -> h -> the other network's task module")
        for task in TASKS:
            which = "mean of the tasks 3 and 0" if task == "mean" else f"task {task} (is it a {task}?)"
            lines += [f"**{what}, {which}**: test error %, mean ± sd over seeds", ""] + table(s, setting, task)
    lines.append("Teachers' own error: " + ", ".join(f"'{c}' network {e:.1f}%" for c, e in teachers.items()))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-transplant")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "transplant_digits.json")
    ap.add_argument("--render", action="store_true", help="print the table of the --json file's runs, train nothing")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(args.json.read_text())
        teachers = {int(k): v for k, v in saved["teachers_error"].items()}
        print(markdown(summary(saved["runs"], saved["seeds"]), teachers))
        return 0
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(CATEGORIES, args.out / "categories.net")
    ensure_trained(args.out / "categories.net", quiet=True)
    teachers = {c: teacher_error(args.out, c) for c in (3, 0)}
    rows, start = [], time.perf_counter()
    grid = [(args.out, args.epochs, cell) for cell in cells(args.seeds)]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for i, row in enumerate(pool.imap(job, grid)):
            rows.append(row)
            print(f"[{i + 1}/{len(grid)}] {row['setting']} c={row['task']} {row['layers']}-layer {row['method']} "
                  f"n={row['n']} seed {row['seed']}: {row['error']:.1f}% ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    s = summary(rows, args.seeds)
    print(markdown(s, teachers))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "seeds": args.seeds, "epochs": args.epochs, "teachers_error": teachers, "runs": rows,
        "cells": [{"setting": k[0], "task": k[1], "layers": k[2], "method": k[3], "n": k[4], **v} for k, v in s.items()],
        "jobs": args.jobs, "seconds": round(time.perf_counter() - start, 1)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
