"""One back-distillation step against one `finetune` step of the same student
(specs/digits/transplant.net: frozen category module, a conv+ReLU adapter, frozen task module),
both on the cached features of the frozen prefix as the trainer runs them, batch 64, one thread.
Interleaved runs, the median of the per-round ratios. Goal (issue 10): <= 2.5x.

    python benchmarks/bench_backdistill_step.py [--repeats 200]

Variants timed: `ce=true` (the spec's: CE + matching), `ce=false` (zero-sample training),
`projections=0` (the full Jacobian: one pass per output unit, here 2), and the general path
(double backward through the whole suffixes instead of the precomputed pseudo-Jacobians of the
frozen ones).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from assembler.allocator import steady_allocator
import assembler
from assembler import data
from assembler.train.backdistill import BackDistill
from assembler.train.prefix import cached
from assembler.train.procedure import Context, Finetune
from assembler.train.run import ensure_trained

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits" / "transplant.net"


def procedure(cls, asm, args: dict, suffix):
    """A procedure as the trainer sets it up over cached prefix features (`suffix`)."""
    settings = {"epochs": 1, "batch": 64, "seed": 0}
    ctx = Context(asm=asm, networks=("student",), settings=settings, args=args, wrappers={"student": suffix})
    proc = cls(ctx)
    proc.setup()
    opt = torch.optim.Adam(proc.parameters(), lr=1e-3)
    for m in proc.train_modules():
        m.train()
    return proc, {"model": opt}


def timed(proc, opts, batch) -> float:
    t = time.perf_counter()
    proc.step(batch, opts)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "backdistill_step.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steady_allocator()  # glibc's adaptive thresholds make batch-256 timings vary (assembler.allocator)
    torch.manual_seed(0)
    ensure_trained(SPEC.parent / "categories.net", quiet=True)
    asm = assembler.compile(assembler.load(SPEC))
    ds = data.digits(split="train", positive=3)
    suffix, (feats,) = cached(asm, "student", [ds.x[:64]])
    batch = [(feats, ds.y[:64])]  # feats: the tuple of cached frontier tensors
    base = {"teacher": "cats.three", "at": "h", "lam": 1.0, "alpha": 1.0, "projections": 1, "ce": True}
    procs = {"finetune": procedure(Finetune, asm, {}, suffix),
             "backdistill": procedure(BackDistill, asm, base, suffix),
             "backdistill ce=false": procedure(BackDistill, asm, {**base, "ce": False}, suffix),
             "backdistill projections=0": procedure(BackDistill, asm, {**base, "projections": 0}, suffix),
             "backdistill, whole suffixes": procedure(BackDistill, asm, base, suffix)}
    procs["backdistill, whole suffixes"][0].fast = False  # the general path, for comparison
    runs = {k: [] for k in procs}
    for _ in range(10):  # warm-up
        for k, (p, o) in procs.items():
            timed(p, o, batch)
    for _ in range(args.repeats):
        for k, (p, o) in procs.items():
            runs[k].append(timed(p, o, batch))
    out = {"repeats": args.repeats, "batch": 64, "threads": 1,
           "median_ms": {k: 1000 * statistics.median(v) for k, v in runs.items()},
           "ratio_to_finetune": {k: statistics.median(a / b for a, b in zip(v, runs["finetune"]))
                                 for k, v in runs.items() if k != "finetune"}}
    print("| step | median ms | ratio to finetune |\n| --- | --- | --- |")
    for k in runs:
        ratio = out["ratio_to_finetune"].get(k)
        print(f"| {k} | {out['median_ms'][k]:.3f} | {'1' if ratio is None else f'{ratio:.2f}'} |")
    goal = out["ratio_to_finetune"]["backdistill"]
    print(f"goal (backdistill step <= 2.5x a finetune step): {'met' if goal <= 2.5 else 'NOT met'} ({goal:.2f}x)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
