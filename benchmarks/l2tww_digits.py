"""L2T-ww reproduction at digits scale (paper 003, Table 1 and section 3.3's limited-data
regime): the source is specs/digits/source.net (trained on the digits 0-4), the target the
smaller network of specs/digits/l2tww.net trained from scratch on N samples per class of the
digits 5-9, N in {5, 10, 25, 50}, ten seeds (a seed sets the initial weights, the few-shot
sample and the batch order). Rows, all in the language:

  scratch               finetune, no edges
  FM (one-to-one)       matching(beta=0.5), fitnet edges c2->b2, c3->b3, c4->b4 (equal sizes)
  FM (all-to-all)       matching(beta=0.5), fitnet edges [c2, c3, c4] * [b1..b4] (lambda = 1)
  AT (one-to-one)       matching(beta=31.25), attention edges on the one-to-one pairs
  L2T-w (one-to-one)    l2tww, meta(where=false) edges on the one-to-one pairs (lambda fixed at 1)
  L2T-ww (all-to-all)   l2tww, meta edges [c2, c3, c4] * [b1..b4]

Every row: sgd(lr=0.05, momentum=0.9, weight_decay=0.0001) (the example's rate and momentum,
the reference's weight decay), cosine schedule, batch 16, the same number of steps whatever N
(`--steps`, so epochs = steps / batches per epoch); l2tww at the paper's defaults (beta 0.5,
T = 2, meta_lr 1e-4, meta_wd 1e-4). AT: the attention-transfer code's beta / 2 = 500 on the
same mean squared attention difference, divided by 16 because these maps have 16 times fewer
positions than the paper's 32x32 inputs give at the same depth (the unscaled 500 left every
target at chance: benchmarks/results/l2tww_digits_run1.md, run with --seeds 0 1 2 3 4
--at-beta 500). Scored by the test accuracy after the last epoch on the held-out digits 5-9
(no choice on test data). Prints a markdown table (mean, sd, median over seeds), paired
differences for the paper's ordering scratch < FM < L2T-w < L2T-ww, and the learned lambda
per pair (Fig. 3d) with its change from initialisation; writes JSON.

    python benchmarks/l2tww_digits.py [--seeds 0 ... 9] [--shots 5 10 25 50] [--steps 400]
        [--lr 0.05] [--at-beta 31.25] [--workers 2] [--json benchmarks/results/l2tww_digits.json]
    python benchmarks/l2tww_digits.py --report benchmarks/results/l2tww_digits.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DIGITS = Path(__file__).resolve().parent.parent / "specs" / "digits"

NETWORK = """\
use "source.net" as src

network tgt(x: [1, 8, 8]) {
    b1 = x -> conv(8, 3, pad=1) -> relu
    b2 = b1 -> conv(16, 3, pad=1) -> relu -> maxpool(2)
    b3 = b2 -> conv(16, 3, pad=1) -> relu
    b4 = b3 -> conv(32, 3, pad=1) -> relu -> maxpool(2)
    logits = b4 -> gap -> linear(5)
    return logits
}
"""
ONE_TO_ONE = "src.c2 -> tgt.b2, src.c3 -> tgt.b3, src.c4 -> tgt.b4"
ALL_TO_ALL = "[src.c2, src.c3, src.c4] * [tgt.b1, tgt.b2, tgt.b3, tgt.b4]"
L2TWW = "l2tww(beta=0.5, inner_steps=2, meta_lr=0.0001, meta_wd=0.0001)"
ROWS = {  # name: (match statement or None, procedure)
    "scratch": (None, "finetune"),
    "FM (one-to-one)": (f"match {ONE_TO_ONE} : fitnet", "matching(beta=0.5)"),
    "FM (all-to-all)": (f"match {ALL_TO_ALL} : fitnet", "matching(beta=0.5)"),
    "AT (one-to-one)": (f"match {ONE_TO_ONE} : attention", "matching(beta={at_beta})"),
    "L2T-w (one-to-one)": (f"match {ONE_TO_ONE} : meta(where=false)", L2TWW),
    "L2T-ww (all-to-all)": (f"match {ALL_TO_ALL} : meta", L2TWW),
}
BATCH = 16
CLAIM = ["scratch", "FM (one-to-one)", "L2T-w (one-to-one)", "L2T-ww (all-to-all)"]  # the paper's order


def spec_text(row: str, shots: int, seed: int, proto: dict) -> str:
    """The spec of one run; `proto` holds the protocol's steps, lr and AT beta."""
    match, procedure = ROWS[row]
    procedure = procedure.format(at_beta=proto["at_beta"])
    epochs = math.ceil(proto["steps"] / math.ceil(5 * shots / BATCH))
    return NETWORK + (f"\n{match}\n" if match else "") + f"""
train tgt {{
    procedure = {procedure}
    data = digits(split="train", classes=[5, 6, 7, 8, 9], per_class={shots})
    test = digits(split="test", classes=[5, 6, 7, 8, 9])
    optimizer = sgd(lr={proto["lr"]}, momentum=0.9, weight_decay=0.0001)
    schedule = cosine
    epochs = {epochs}
    batch = {BATCH}
    seed = {seed}
}}
"""


def run_one(job: tuple[str, int, int, dict]) -> dict:
    """Train one (row, N, seed) in memory; its final test accuracy, edge lambdas, CPU seconds."""
    import torch

    import assembler
    from assembler.train.run import train_spec
    torch.set_num_threads(1)
    row, shots, seed, proto = job
    spec = assembler.parse(spec_text(row, shots, seed, proto), str(DIGITS / "bench_l2tww.net"))
    start = time.process_time()
    history = train_spec(spec, quiet=True)["tgt"]
    last = [h for h in history if "epoch" in h][-1]
    final = history[-1] if history[-1].get("stage") == "final" else {}
    return {"row": row, "shots": shots, "seed": seed, "accuracy": last["test_accuracy"],
            "train_accuracy": last["train_accuracy"], "epochs": last["epoch"],
            "edge_lambdas": final.get("edge_lambdas"), "edge_lambda_sds": final.get("edge_lambda_sds"),
            "cpu_seconds": time.process_time() - start}


def initial_lambdas(shots: int, seed: int, proto: dict) -> list[float]:
    """L2T-ww's lambda per pair before training (same seed: same initial meta-networks and
    samples): g's weights start at torch's default, so lambda = relu6(1 + g(gap S)) is not 1."""
    import assembler
    from assembler.data import digits
    from assembler.train.l2tww import edge_lambdas
    row = "L2T-ww (all-to-all)"
    asm = assembler.compile(assembler.parse(spec_text(row, shots, seed, proto), str(DIGITS / "bench_l2tww.net")),
                            seed=seed)
    x = digits(split="train", classes=[5, 6, 7, 8, 9], per_class=shots, seed=seed).x
    return edge_lambdas(asm, "tgt", x)[0]


def mean_sd(values: list[float], median: bool = False) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{statistics.mean(values) * 100:.1f} ± {sd * 100:.1f}"
    return text + (f" ({statistics.median(values) * 100:.1f})" if median else "")


def report(runs: list[dict], shots: list[int], seeds: list[int]) -> str:
    acc = {(r["row"], r["shots"], r["seed"]): r["accuracy"] for r in runs}
    present = [row for row in ROWS if any(r["row"] == row for r in runs)]
    lines = ["| method | " + " | ".join(f"N = {n}" for n in shots) + " |",
             "| --- | " + " | ".join("---:" for _ in shots) + " |"]
    for row in present:
        lines.append(f"| {row} | " + " | ".join(mean_sd([acc[row, n, s] for s in seeds], True) for n in shots) + " |")
    failed = {(r["row"], r["shots"]) for r in runs if r["train_accuracy"] < 0.5}
    lines += ["", "Test accuracy (%), mean ± sd over seeds (median). Runs that did not fit their training data "
              "(train accuracy < 50%): " + (", ".join(f"{row} N = {n}: {sum(1 for r in runs if (r['row'], r['shots']) == (row, n) and r['train_accuracy'] < 0.5)}"
                                                     for row, n in sorted(failed)) or "none") + "."]
    lines += ["", "Paired differences (points, mean ± sd over seeds; wins/seeds):", "",
              "| difference | " + " | ".join(f"N = {n}" for n in shots) + " |",
              "| --- | " + " | ".join("---:" for _ in shots) + " |"]
    pairs = list(zip(CLAIM[1:], CLAIM[:-1])) + [("FM (all-to-all)", "FM (one-to-one)"),
                                                ("L2T-ww (all-to-all)", "FM (all-to-all)"),
                                                ("L2T-ww (all-to-all)", "scratch"), ("AT (one-to-one)", "scratch")]
    for a, b in [(a, b) for a, b in pairs if a in present and b in present]:
        cells = []
        for n in shots:
            d = [acc[a, n, s] - acc[b, n, s] for s in seeds]
            cells.append(f"{mean_sd(d)} ({sum(x > 0 for x in d)}/{len(d)})")
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lambda_table(runs: list[dict], shots: list[int], proto: dict) -> str:
    """L2T-ww's mean lambda per pair after training (over seeds and training samples), and its
    change from the initial lambda of the same seeds, as source x target grids."""
    lines = []
    for n in shots:
        got = [r for r in runs if r["row"] == "L2T-ww (all-to-all)" and r["shots"] == n and r["edge_lambdas"]]
        if not got:
            continue
        before = [initial_lambdas(n, r["seed"], proto) for r in got]
        mean = [statistics.mean(r["edge_lambdas"][k] for r in got) for k in range(12)]
        moved = [statistics.mean(r["edge_lambdas"][k] - b[k] for r, b in zip(got, before)) for k in range(12)]
        lines += [f"L2T-ww lambda after training, N = {n}, mean over {len(got)} seeds and the training samples "
                  "(in brackets: the change from the same seeds' initial lambda):", "",
                  "| source \\ target | b1 | b2 | b3 | b4 |", "| --- | ---: | ---: | ---: | ---: |"]
        for i, s in enumerate(("c2", "c3", "c4")):
            lines.append(f"| {s} | " + " | ".join(f"{mean[i * 4 + j]:.2f} ({moved[i * 4 + j]:+.2f})"
                                                   for j in range(4)) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 10, 25, 50])
    ap.add_argument("--steps", type=int, default=400, help="SGD steps per run, whatever N")
    ap.add_argument("--lr", type=float, default=0.05, help="SGD learning rate of every row")
    ap.add_argument("--at-beta", type=float, default=31.25, help="weight of the attention-transfer edges")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/l2tww_digits.json"))
    ap.add_argument("--report", type=Path, help="print the tables of a results file written before; train nothing")
    args = ap.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        st = saved["settings"]
        print(report(saved["runs"], st["shots"], st["seeds"]), "\n")
        print(lambda_table(saved["runs"], st["shots"], {"lr": 0.05, "at_beta": 500.0, **st}))
        return 0
    from assembler.train.run import ensure_trained
    ensure_trained(DIGITS / "source.net", quiet=True)  # once, before the workers
    # the slowest rows first, so that the two workers finish together
    proto = {"steps": args.steps, "lr": args.lr, "at_beta": args.at_beta}
    jobs = [(row, n, s, proto) for row in reversed(args.rows) for n in reversed(args.shots) for s in args.seeds]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(run_one, jobs))
    wall = time.perf_counter() - start
    table = report(runs, args.shots, args.seeds)
    print(table, "\n")
    print(lambda_table(runs, args.shots, proto))
    cpu = {row: sum(r["cpu_seconds"] for r in runs if r["row"] == row) for row in args.rows}
    print(f"wall {wall / 60:.1f} min on {args.workers} workers; CPU minutes per row: "
          + ", ".join(f"{k} {v / 60:.1f}" for k, v in cpu.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": {"seeds": args.seeds, "shots": args.shots, **proto,
                                                  "batch": BATCH, "rows": {k: ROWS[k] for k in args.rows}},
                                     "runs": runs, "wall_seconds": wall, "table": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
