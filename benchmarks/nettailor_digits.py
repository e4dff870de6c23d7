"""NetTailor on the 8x8 digits: does the paper's claim hold at this scale?

Paper 001 (section 4.1, fig. 4 and 6): the tailored network stays within about 1 point of the
fine-tuned teacher with far fewer FLOPs (-45.8% on SVHN); the teacher term helps; easier tasks
are pruned more. Here, over seeds (each seed: the teacher's and the student's initialisation,
order of samples and the held-out share; the universal blocks are pre-trained once):

- `tailor_resnet.net` (a residual stem + 6 basic blocks pre-trained on digits 0-4, tailored
  to 5-9) and `tailor.net` (a plain 4-conv network, the same tasks), each with the teacher
  term (gamma2 = 10, the paper's) and without (gamma2 = 0);
- the easier task: `tailor_resnet.net` on one-vs-rest "is it an 8" (`positive=8`, 2 classes).

Everything else is the spec's: the paper's gamma1 = 0.3, threshold 0.05, 3 skips, the same 20%
of the training data held out of the teacher's and the student's training; k is the leanest
whose held-out accuracy is within `tolerance` of the teacher's (0.01 resnet, 0.005 plain).
Latency: each candidate and the teacher inference-compiled, CPU, 1 thread, medians of
interleaved runs as ratios (teacher = 1), measured by the procedure itself.

Prints markdown tables and writes them with the raw rows (JSON) under --results:

    python benchmarks/nettailor_digits.py [--seeds 0 1 2 3 4] [--out runs/bench-nettailor]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from assembler.allocator import steady_allocator
import assembler
from assembler.resolve import read
from assembler.train.run import apply_sets, train_spec
from assembler.train.tailor import choose

SPECS = Path(__file__).resolve().parent.parent / "specs" / "digits"
RESULTS = Path(__file__).resolve().parent / "results"
# (name, spec file, task, values of gamma2)
CONFIGS = [("resnet 5-9", "tailor_resnet.net", "5-9", (10.0, 0.0)),
           ("plain 5-9", "tailor.net", "5-9", (10.0, 0.0)),
           ("resnet, is it an 8", "tailor_resnet.net", "8 vs rest", (10.0,))]


def spec_text(file: str, task: str) -> str:
    """The spec, or its binary variant: the same networks with 2 outputs, data `positive=8`."""
    text = (SPECS / file).read_text()
    if task == "8 vs rest":
        text = text.replace("classes=[5, 6, 7, 8, 9]", "positive=8").replace("linear(5)", "linear(2)")
    return text


def run_one(work: Path, file: str, task: str, gamma2: float, seed: int, out: Path, quick: bool) -> dict:
    """Train the teacher and tailor the student once; the final metrics and the wall time."""
    path = work / (file if task == "5-9" else f"binary_{file}")
    path.write_text(spec_text(file, task))
    spec = apply_sets(read(path), [f"seed={seed}"])  # both sections: the same seed, so the same held-out samples
    start = time.perf_counter()
    if quick:  # a smoke test of this script, not a result
        spec = apply_sets(spec, ["epochs=2"])
    history = train_spec(spec, network="student", out=out, sets=[f"procedure.gamma2={gamma2}"] + (
        ["procedure.retrain_epochs=1"] if quick else []), quiet=True, force=True)["student"]
    final = dict(history[-1])
    final["seconds"] = round(time.perf_counter() - start, 1)
    final["teacher_params"] = assembler.check(spec).params("teacher")
    return final


# ---------------------------------------------------------------------------------------------
# Statistics


def ms(values: list, fmt: str = ".4f", scale: float = 1.0) -> str:
    """mean ± sd (sd over seeds; '-' when there is no value)."""
    v = [x * scale for x in values if x is not None]
    if not v:
        return "-"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):{fmt}} ± {sd:{fmt}}"


def rows_by_k(runs: list[dict]) -> dict[int, list[tuple[dict, dict]]]:
    out: dict[int, list] = {}
    for run in runs:
        for r in run["tailor"]:
            if "skipped" not in r:
                out.setdefault(r["k"], []).append((run, r))
    return dict(sorted(out.items()))


def curve_table(runs: list[dict]) -> list[str]:
    lines = ["| k | seeds | test accuracy | held-out accuracy | FLOPs / teacher | params / teacher | latency b1 | "
             "latency b256 | chosen |", "|---|---|---|---|---|---|---|---|---|"]
    lines.append(f"| teacher | {len(runs)} | {ms([r['teacher_accuracy'] for r in runs])} | "
                 f"{ms([r['teacher_val_accuracy'] for r in runs])} | 1 | 1 | 1 | 1 | |")
    lines.append(f"| untailored | {len(runs)} | {ms([r['student_test_accuracy'] for r in runs])} | "
                 f"{ms([r['student_val_accuracy'] for r in runs])} | "
                 f"{ms([r['student_flops'] / r['teacher_flops'] for r in runs], '.3f')} | "
                 f"{ms([r['student_params'] / r['teacher_params'] for r in runs], '.3f')} | "
                 f"{ms([(r['student_latency'] or {}).get('b1') for r in runs], '.2f')} | "
                 f"{ms([(r['student_latency'] or {}).get('b256') for r in runs], '.2f')} | |")
    for k, pairs in rows_by_k(runs).items():
        lat = lambda b: [(r.get("latency") or {}).get(b) for _, r in pairs]  # noqa: E731
        lines.append(f"| {k} | {len(pairs)} | {ms([r['test_accuracy'] for _, r in pairs])} | "
                     f"{ms([r['accuracy'] for _, r in pairs])} | "
                     f"{ms([r['flops'] / run['teacher_flops'] for run, r in pairs], '.3f')} | "
                     f"{ms([r['params'] / run['teacher_params'] for run, r in pairs], '.3f')} | "
                     f"{ms(lat('b1'), '.2f')} | {ms(lat('b256'), '.2f')} | "
                     f"{sum(run['chosen_k'] == k for run, _ in pairs)} |")
    return lines


def chosen(run: dict) -> dict:
    return next(r for r in run["tailor"] if r.get("k") == run["chosen_k"])


def fastest(run: dict) -> dict:
    """The candidate `cost="latency"` keeps among the same candidates (the procedure's own
    `choose`, applied to the recorded rows: the same as training again with that setting,
    measurements aside)."""
    return choose(run["tailor"], run["teacher_val_accuracy"], run["tolerance"], "latency")


def summary_row(name: str, gamma2: float, runs: list[dict], pick=chosen) -> str:
    picks = [pick(r) for r in runs]
    gap = [r["teacher_accuracy"] - p["test_accuracy"] for r, p in zip(runs, picks)]
    removed = [1 - p["flops"] / r["teacher_flops"] for r, p in zip(runs, picks)]
    return (f"| {name} | {gamma2:g} | {ms([r['teacher_accuracy'] for r in runs])} | "
            f"{ms([p['test_accuracy'] for p in picks])} | {ms(gap, '.2f', 100)} | {ms(removed, '.1%')} | "
            f"{ms([1 - p['params'] / r['teacher_params'] for r, p in zip(runs, picks)], '.1%')} | "
            f"{ms([(p.get('latency') or {}).get('b1') for p in picks], '.2f')} | "
            f"{ms([(p.get('latency') or {}).get('b256') for p in picks], '.2f')} | "
            f"{', '.join(str(p['k']) for p in picks)} |")


def paired(a: list[dict], b: list[dict], key) -> list[float]:
    """Per seed, key(run of a) - key(run of b)."""
    return [key(x) - key(y) for x, y in zip(a, b)]


def teacher_ablation(name: str, with_t: list[dict], without: list[dict]) -> list[str]:
    lines = [f"**{name}**: test accuracy with the teacher term minus without, paired by seed "
             f"(points): chosen network {ms(paired(with_t, without, lambda r: chosen(r)['test_accuracy']), '.2f', 100)}"
             f"; per k:"]
    per_k = []
    for k, pairs in rows_by_k(with_t).items():
        other = {run["seed"]: r for run, r in rows_by_k(without).get(k, [])}
        d = [r["test_accuracy"] - other[run["seed"]]["test_accuracy"] for run, r in pairs if run["seed"] in other]
        per_k.append(f"k={k}: {ms(d, '.2f', 100)}")
    lines.append("; ".join(per_k) + ".")
    return lines


def verdicts(results: dict) -> list[str]:
    main = results["resnet 5-9"]["10"]
    picks = [chosen(r) for r in main]
    gap = statistics.mean(r["teacher_accuracy"] - p["test_accuracy"] for r, p in zip(main, picks)) * 100
    removed = statistics.mean(1 - p["flops"] / r["teacher_flops"] for r, p in zip(main, picks))
    helps = statistics.mean(paired(main, results["resnet 5-9"]["0"], lambda r: chosen(r)["test_accuracy"])) * 100
    helps_plain = statistics.mean(paired(results["plain 5-9"]["10"], results["plain 5-9"]["0"],
                                         lambda r: chosen(r)["test_accuracy"])) * 100
    easy = statistics.mean(1 - chosen(r)["flops"] / r["teacher_flops"] for r in results["resnet, is it an 8"]["10"])
    fast = [(chosen(r).get("latency") or {}) for r in main]
    b1 = statistics.mean(x["b1"] for x in fast if "b1" in x) if fast and "b1" in fast[0] else float("nan")
    b256 = statistics.mean(x["b256"] for x in fast if "b256" in x) if fast and "b256" in fast[0] else float("nan")
    return [
        f"- Within about 1 point of the teacher (resnet 5-9): mean gap {gap:.2f} points: "
        f"{'holds' if gap <= 1.0 else 'does NOT hold'}.",
        f"- Far fewer FLOPs (paper: -45.8% on SVHN): {removed:.1%} of the teacher's FLOPs removed.",
        f"- The teacher helps: chosen network {helps:+.2f} points with the teacher term (resnet), "
        f"{helps_plain:+.2f} (plain): {'holds' if helps > 0 and helps_plain > 0 else 'does NOT hold (at this scale)'}.",
        f"- Easier tasks are pruned more: is-it-an-8 removes {easy:.1%} of the FLOPs against {removed:.1%} for 5-9: "
        f"{'holds' if easy > removed else 'does NOT hold'}.",
        f"- Speed (resnet 5-9, chosen network, inference-compiled, against the teacher): {b1:.2f} at batch 1, "
        f"{b256:.2f} at batch 256.",
    ] + slower_than_teacher(results)


def slower_than_teacher(results: dict) -> list[str]:
    """Issue 14's bar: no candidate with fewer FLOPs than its teacher may run slower. Every
    candidate of every run, per batch size: how many have fewer FLOPs, and which are slower."""
    rows = [(name, g, r["seed"], c, r["teacher_flops"]) for name, by_g in results.items() for g, runs in by_g.items()
            for r in runs for c in r["tailor"] if c.get("latency") and c["flops"] < r["teacher_flops"]]
    out = []
    for b in ("b1", "b256"):
        slow = [(name, g, seed, c["k"], c["flops"] / tf, c["latency"][b]) for name, g, seed, c, tf in rows
                if c["latency"][b] > 1.0]
        out.append(f"- Fewer FLOPs, not slower (batch {b[1:]}): {len(rows) - len(slow)} of {len(rows)} candidates with "
                   f"fewer FLOPs than their teacher run at most as long as it"
                   + (f"; slower: {', '.join(f'{n} g{g} s{sd} k={k} ({fl:.0%} FLOPs, {t:.2f})' for n, g, sd, k, fl, t in slow)}"
                      if slow else "") + ".")
    return out


def report(results: dict, args, seconds: float) -> str:
    header = ["| configuration | gamma2 | teacher test | tailored test | gap (points) | FLOPs removed | params removed | "
              "latency b1 | latency b256 | chosen k per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    out = ["# NetTailor on the digits (paper 001)", "",
           f"Command: `python benchmarks/nettailor_digits.py --seeds {' '.join(map(str, args.seeds))}` "
           f"({seconds / 60:.1f} min, torch {torch.__version__}, 1 thread; epochs as the specs say: teacher 15 "
           "(resnet) or 10 (plain), student 20, 20 per retrained k). Mean ± sd over seeds.", "",
           "## The chosen networks", "", *header]
    for name, _, _, gammas in CONFIGS:
        for g in gammas:
            out.append(summary_row(name, g, results[name][f"{g:g}"]))
    out += ["", "Latency: time(network) / time(teacher), both inference-compiled, median of interleaved runs. "
            "Parameters count the frozen shared blocks a network uses (the teacher's are its own copy).", "",
            '## Kept by measured latency (cost="latency")', "",
            "The same candidates, the fastest within tolerance (the larger of its two latency ratios) instead of the "
            "leanest:", "", header[0], header[1]]
    for name, _, _, gammas in CONFIGS:
        for g in gammas:
            out.append(summary_row(name, g, results[name][f"{g:g}"], fastest))
    out += ["",
            "## The paper's claims at this scale", ""] + verdicts(results) + ["", "## The teacher term", ""]
    for name in ("resnet 5-9", "plain 5-9"):
        out += teacher_ablation(name, results[name]["10"], results[name]["0"]) + [""]
    for name, _, _, gammas in CONFIGS:
        for g in gammas:
            out += [f"## Accuracy against cost over k: {name}, gamma2 = {g:g}", ""] + \
                curve_table(results[name][f"{g:g}"]) + [""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-nettailor"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 1 per k: checks the script, measures nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steady_allocator()  # glibc's adaptive thresholds make batch-256 timings vary (assembler.allocator)
    os.environ.setdefault("ASSEMBLER_THREADS", "1")
    work = args.out / "specs"
    work.mkdir(parents=True, exist_ok=True)
    for f in ("resnet.net", "source.net"):
        shutil.copy(SPECS / f, work / f)
    start = time.perf_counter()
    results: dict = {}
    for name, file, task, gammas in CONFIGS:
        for g in gammas:
            runs = []
            for seed in args.seeds:
                dest = args.out / f"{file[:-4]}-{task.replace(' ', '')}-g{g:g}-s{seed}"
                run = run_one(work, file, task, g, seed, dest, args.quick)
                run["seed"] = seed
                runs.append(run)
                print(f"{name}, gamma2 {g:g}, seed {seed}: chosen k={run['chosen_k']}, test "
                      f"{chosen(run)['test_accuracy']:.4f} (teacher {run['teacher_accuracy']:.4f}), "
                      f"{run['seconds']:.0f} s", file=sys.stderr, flush=True)
            results.setdefault(name, {})[f"{g:g}"] = runs
    text = report(results, args, time.perf_counter() - start)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "nettailor_digits.md").write_text(text + "\n")
    (args.results / "nettailor_digits.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
