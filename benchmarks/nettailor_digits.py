"""NetTailor reproduction on the digits: source pre-trained on 0-4 (specs/digits/source.net),
target 5-9 (specs/digits/tailor.net), over several seeds.

Reports per seed: teacher accuracy; tailored student accuracy, parameters, FLOPs and pre-trained
layers removed; the ablations "no teacher" (gamma2 = 0) and "no pruning" (the student after its
first stage, all proxies kept); and the CPU inference time of the tailored student against the
teacher (interleaved runs, median ratio). Goal (issue 6): the tailored student within 1 point
of the teacher with at least 30% of the FLOPs removed.

    python benchmarks/nettailor_digits.py [--seeds 0 1 2] [--out runs/bench-nettailor]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import assembler
from assembler import data
from assembler.checkpoint import restore
from assembler.train.run import train_spec
from assembler.train.evaluation import evaluate

SPEC = Path(__file__).resolve().parent.parent / "specs" / "digits" / "tailor.net"


def inference_ratio(fast, slow, x, repeats: int = 30) -> float:
    """Median over interleaved runs of time(fast) / time(slow)."""
    fast.eval()
    slow.eval()
    ratios = []
    with torch.no_grad():
        for _ in range(5):
            fast(x), slow(x)
        for _ in range(repeats):
            t = time.perf_counter()
            fast(x)
            a = time.perf_counter() - t
            t = time.perf_counter()
            slow(x)
            b = time.perf_counter() - t
            ratios.append(a / b)
    return statistics.median(ratios)


def run_seed(seed: int, out: Path, extra_sets: list[str]) -> dict:
    spec = assembler.load(SPEC)
    test = data.digits(split="test", classes=[5, 6, 7, 8, 9])
    row: dict = {"seed": seed}
    for variant, extra in (("tailored", []), ("no_teacher", ["procedure.gamma2=0"])):
        dest = out / f"seed{seed}-{variant}"
        history = train_spec(spec, network="student", out=dest, sets=[f"seed={seed}", *extra_sets, *extra], quiet=True)["student"]
        final = history[-1]
        stage1 = [h for h in history if h.get("stage") != "final"][-1]
        row[variant] = {"accuracy": final["test_accuracy"], "params": final["params"], "flops": final["flops"],
                        "removed": sorted({b for r in final["tailor"] if r.get("k") == final["chosen_k"]
                                           for b in r["removed_blocks"]})}
        if variant == "tailored":
            row["teacher"] = final["teacher_accuracy"]
            row["no_pruning"] = {"accuracy": stage1["test_accuracy"], "params": final["student_params"],
                                 "flops": final["student_flops"]}
            asm = restore(dest)
            teacher_asm = asm  # the checkpoint holds the teacher it was tailored against
            row["teacher_flops"] = asm.checked.flops("teacher")
            row["teacher_params"] = asm.checked.params("teacher")
            row["inference_ratio"] = inference_ratio(asm["student"], teacher_asm["teacher"], test.x)
            assert abs(evaluate(asm["student"], test)["accuracy"] - final["test_accuracy"]) < 1e-9
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-nettailor"))
    ap.add_argument("--tolerance", type=float, help="override the spec's procedure tolerance (0.005)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    extra = [f"procedure.tolerance={args.tolerance}"] if args.tolerance is not None else []
    rows = [run_seed(s, args.out, extra) for s in args.seeds]
    print(f"{'seed':>4} {'teacher':>8} {'tailored':>9} {'FLOPs kept':>10} {'params kept':>11} {'removed':>16} "
          f"{'no teacher':>10} {'no pruning':>10} {'infer t/T':>9}")
    for r in rows:
        t = r["tailored"]
        print(f"{r['seed']:>4} {r['teacher']:>8.4f} {t['accuracy']:>9.4f} {t['flops'] / r['teacher_flops']:>10.1%} "
              f"{t['params'] / r['teacher_params']:>11.1%} {','.join(t['removed']) or '-':>16} "
              f"{r['no_teacher']['accuracy']:>10.4f} {r['no_pruning']['accuracy']:>10.4f} {r['inference_ratio']:>9.2f}")
    mean = lambda f: statistics.mean(f(r) for r in rows)  # noqa: E731
    gap = mean(lambda r: r["teacher"] - r["tailored"]["accuracy"])
    removed = 1 - mean(lambda r: r["tailored"]["flops"] / r["teacher_flops"])
    print(f"mean: accuracy gap to the teacher {gap * 100:.2f} points, FLOPs removed {removed:.1%}, "
          f"no-teacher accuracy {mean(lambda r: r['no_teacher']['accuracy']):.4f}, "
          f"inference time ratio {mean(lambda r: r['inference_ratio']):.2f}")
    print("goal (within 1 point, >= 30% FLOPs removed):", "met" if gap <= 0.01 and removed >= 0.30 else "NOT met")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
