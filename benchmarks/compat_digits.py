"""Compatible components (paper 002, Fig. 2) on the digits: a = digits 0-6, b = digits 3-9
inverted (a domain shift), common classes 3-6 (chance 25%).

Rows as in Fig. 2: independent training, IIW, RP, DCC and IIW+RP+DCC, each joint and
incremental, and the upper bound (independent networks, each with its own rotation head,
measured on their own tasks restricted to the common classes; trained incrementally it is two
runs that share nothing, a control for the recombination that RP alone gives). Per seed, after training:
recombination accuracy E_a+H_b (on a's test data) and E_b+H_a (on b's), over the common
classes, batch-norm with batch statistics (the paper's protocol) and with running statistics;
the originals' accuracy on their whole tasks (running statistics, the usual test) and on the
common classes. Then mean and sd over seeds, paired differences by seed (same seed: same data
order and same initial weights of a), and the paper's claims tested.

    python benchmarks/compat_digits.py [--seeds 0 1 2 3 4] [--epochs 10] [--width 16] [--workers 2]

writes benchmarks/results/compat_digits.{json,md} and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHANCE = 0.25
METHODS = {  # name -> (auxiliary heads, iiw)
    "independent": ([], False),
    "IIW": ([], True),
    "RP": (["rot"], False),
    "DCC": (["dcc"], False),
    "IIW+RP+DCC": (["rot", "dcc"], True),
}


def spec_text(aux: list[str], iiw: bool, schedule: str, width: int, epochs: int, own_heads: bool = False) -> str:
    """The two networks with the heads a method uses; `own_heads`: one rotation head each."""
    heads = {"a": [], "b": []}
    lines = [f"block extractor = conv({width}, 3, pad=1) -> batchnorm -> relu -> conv({width}, 3, pad=1) -> batchnorm "
             "-> relu -> maxpool(2)",
             f"block head(n) = conv({2 * width}, 3, pad=1) -> batchnorm -> relu -> gap -> linear(n)", ""]
    if own_heads:
        lines += ["shared rot_a = head(4)", "shared rot_b = head(4)"]
        heads = {"a": ["rot_a"], "b": ["rot_b"]}
        aux, rotation = ["rot_a", "rot_b"], ["rot_a", "rot_b"]
    else:
        lines += [f"shared {h} = head(4)" for h in aux]  # 4 rotations; 4 common classes
        heads = {"a": list(aux), "b": list(aux)}
        rotation = [h for h in aux if h == "rot"]
    for net in ("a", "b"):
        lines += ["", f"network {net}(x: [1, 8, 8]) {{", "    f = x -> extractor", "    y = f -> head(7)"]
        lines += [f"    h{i} = f -> {h}" for i, h in enumerate(heads[net])]
        lines += [f"    return y{''.join(f', h{i}' for i in range(len(heads[net])))}", "}"]
    lines += ["", "train a, b {",
              f"    procedure = compat(aux=[{', '.join(aux)}], common=[3, 4, 5, 6], schedule=\"{schedule}\", "
              f"iiw={'true' if iiw else 'false'}, rotation=[{', '.join(rotation)}])",
              "    data = [digits(classes=[0, 1, 2, 3, 4, 5, 6]), digits(classes=[3, 4, 5, 6, 7, 8, 9], invert=true)]",
              "    optimizer = sgd(lr=0.05, momentum=0.9)", f"    epochs = {epochs}", "    batch = 64", "}", ""]
    return "\n".join(lines)


def run_one(job: tuple) -> dict:
    """Train one configuration for one seed, in memory; the last epoch's measurements."""
    row, schedule, seed, width, epochs = job
    import torch
    torch.set_num_threads(1)
    import assembler
    from assembler.train.run import train_spec
    if row == "upper bound":
        text = spec_text([], False, schedule, width, epochs, own_heads=True)
    else:
        aux, iiw = METHODS[row]
        text = spec_text(aux, iiw, schedule, width, epochs)
    spec = assembler.parse(text, f"<compat {row} {schedule}>")
    start = time.perf_counter()
    history = train_spec(spec, sets=[f"seed={seed}"], quiet=True)["a"]
    rec = history[-1]["recombination"]
    pairs = {p["extractor"]: p for p in rec["pairs"].values()}
    out = {"row": row, "schedule": schedule, "seed": seed, "seconds": time.perf_counter() - start}
    for mode in ("batch", "running"):
        out[f"ab_{mode}"], out[f"ba_{mode}"] = pairs["a"][mode], pairs["b"][mode]
        out[f"rec_{mode}"] = rec["mean"][mode]
        out[f"common_{mode}"] = (rec["originals"]["a"][mode] + rec["originals"]["b"][mode]) / 2
    for n in ("a", "b"):  # incrementally, a's last test comes from its own (first) stage
        out[f"task_{n}"] = next(h["networks"][n]["test_accuracy"] for h in reversed(history) if n in h.get("networks", {}))
    out["task"] = (out["task_a"] + out["task_b"]) / 2
    return out


def jobs(seeds: list[int], width: int, epochs: int) -> list[tuple]:
    # the upper bound incrementally: a, then b, nothing shared at all (a control for joint coupling)
    rows = [(m, s) for m in [*METHODS, "upper bound"] for s in ("joint", "incremental")]
    heavy_first = sorted(rows, key=lambda r: -len(METHODS.get(r[0], (["rot"], 0))[0]))
    return [(m, s, seed, width, epochs) for seed in seeds for m, s in heavy_first]


# -- statistics ------------------------------------------------------------------------------------


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def paired(a: list[float], b: list[float]) -> dict:
    """a - b by seed: mean, sd, t statistic, how many seeds are positive."""
    d = [x - y for x, y in zip(a, b)]
    m, sd = mean_sd(d)
    t = m / (sd / math.sqrt(len(d))) if sd > 1e-12 else (math.inf if m > 0 else -math.inf if m < 0 else 0.0)
    return {"mean": m, "sd": sd, "t": t, "positive": sum(x > 0 for x in d), "n": len(d)}


T_CRIT = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # two-sided 5%, by n


def significant(p: dict) -> bool:
    return abs(p["t"]) > T_CRIT.get(p["n"], 2.0)


def summarise(results: list[dict]) -> dict:
    by = {}
    for r in results:
        by.setdefault((r["row"], r["schedule"]), []).append(r)
    for rs in by.values():
        rs.sort(key=lambda r: r["seed"])
    keys = ["ab_batch", "ba_batch", "rec_batch", "ab_running", "ba_running", "rec_running", "common_batch",
            "common_running", "task_a", "task_b", "task", "seconds"]
    order = [(m, s) for m in [*METHODS, "upper bound"] for s in ("joint", "incremental") if (m, s) in by]
    table = {f"{row} / {s}": {k: mean_sd([r[k] for r in by[(row, s)]]) for k in keys} for row, s in order}
    col = lambda row, s, k="rec_batch": [r[k] for r in by[(row, s)]]  # noqa: E731
    diffs, claims = {}, {}
    for s in ("joint", "incremental"):
        for m in ("IIW", "RP", "DCC", "IIW+RP+DCC"):
            diffs[f"{m} - independent ({s})"] = paired(col(m, s), col("independent", s))
        for m in ("IIW", "RP", "DCC"):
            diffs[f"IIW+RP+DCC - {m} ({s})"] = paired(col("IIW+RP+DCC", s), col(m, s))
        for m in ("RP", "DCC", "IIW+RP+DCC"):
            diffs[f"originals: {m} - independent ({s}, whole tasks)"] = paired(col(m, s, "task"),
                                                                               col("independent", s, "task"))
    for m in METHODS:
        diffs[f"{m}: joint - incremental"] = paired(col(m, "joint"), col(m, "incremental"))
    for s in ("joint", "incremental"):  # does sharing the rotation head matter, beyond RP itself?
        diffs[f"RP, shared head - own heads ({s})"] = paired(col("RP", s), col("upper bound", s))
    upper = mean_sd(col("upper bound", "joint", "common_batch"))
    indep = mean_sd(col("independent", "joint"))
    claims["independent recombination is near chance (within 0.10 of 25%)"] = abs(indep[0] - CHANCE) < 0.10
    for m in ("IIW", "RP", "DCC"):
        claims[f"{m} raises recombination accuracy (joint, paired t, 5%)"] = (
            diffs[f"{m} - independent (joint)"]["mean"] > 0 and significant(diffs[f"{m} - independent (joint)"]))
    claims["IIW+RP+DCC is the best (joint, above each single method, paired t, 5%)"] = all(
        diffs[f"IIW+RP+DCC - {m} (joint)"]["mean"] > 0 and significant(diffs[f"IIW+RP+DCC - {m} (joint)"])
        for m in ("IIW", "RP", "DCC"))
    j = diffs["IIW+RP+DCC: joint - incremental"]
    claims["incremental is a little below joint (IIW+RP+DCC: 0 < joint - incremental < 0.10)"] = 0 < j["mean"] < 0.10
    o = diffs["originals: IIW+RP+DCC - independent (joint, whole tasks)"]
    claims["the original tasks lose nothing (IIW+RP+DCC joint, whole-task accuracy, mean difference > -0.01)"] = \
        o["mean"] > -0.01
    return {"table": table, "differences": diffs, "claims": claims, "upper_bound": upper}


def markdown(summary: dict, args) -> str:
    pct = lambda ms: f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"  # noqa: E731
    out = [f"Compatible components on the digits (a = 0-6, b = 3-9 inverted, common 3-6, chance 25%); "
           f"{len(args.seeds)} seeds, {args.epochs} epochs per network, width {args.width}; mean ± sd in %.",
           "Recombination: E_a+H_b on a's test data and E_b+H_a on b's, over the common classes; "
           "BN batch = batch statistics (the paper's protocol), BN running = running statistics.", "",
           "| method | schedule | E_a+H_b (BN batch) | E_b+H_a (BN batch) | mean (BN batch) | mean (BN running) "
           "| originals, common classes (BN batch) | originals, whole tasks | s/run |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, t in summary["table"].items():
        row, s = key.split(" / ")
        if row == "upper bound":
            row = "upper bound (own rotation heads)"
        out.append(f"| {row} | {s} | {pct(t['ab_batch'])} | {pct(t['ba_batch'])} | **{pct(t['rec_batch'])}** | "
                   f"{pct(t['rec_running'])} | {pct(t['common_batch'])} | {pct(t['task'])} | {t['seconds'][0]:.0f} |")
    out += ["", "The upper bound is its originals' accuracy on the common classes (the paper's practical "
            "bound); its recombination columns are a control: each network has its own rotation head, and "
            "incrementally the two runs share nothing. s/run: wall seconds per run, on 2 cores shared with "
            "other jobs.", "", "Paired differences by seed (recombination mean, BN batch, unless said), in points:", "",
            "| difference | mean ± sd | t | seeds > 0 |", "| --- | --- | --- | --- |"]
    for name, d in summary["differences"].items():
        out.append(f"| {name} | {100 * d['mean']:+.1f} ± {100 * d['sd']:.1f} | {d['t']:.2f} | {d['positive']}/{d['n']} |")
    out += ["", "The paper's claims at this scale:", ""]
    out += [f"- {'holds' if ok else 'does not hold'}: {c}" for c, ok in summary["claims"].items()]
    out += ["", f"Rerun: `python benchmarks/compat_digits.py --seeds {' '.join(map(str, args.seeds))} "
                f"--epochs {args.epochs} --width {args.width}`"]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "compat_digits")
    ap.add_argument("--report", type=Path, help="rebuild the tables from a JSON this script wrote; no training")
    args = ap.parse_args()
    if args.report:  # the summary and tables again, written beside the JSON
        saved = json.loads(args.report.read_text())
        for k in ("seeds", "epochs", "width"):
            setattr(args, k, saved["args"][k])
        summary = summarise(saved["runs"])
        text = markdown(summary, args)
        args.report.write_text(json.dumps({**saved, **summary}, indent=1))
        args.report.with_suffix(".md").write_text(text + "\n")
        print(text)
        return 0
    os.environ["OMP_NUM_THREADS"] = "1"
    todo = jobs(args.seeds, args.width, args.epochs)
    start = time.perf_counter()
    results = []
    with get_context("spawn").Pool(args.workers) as pool:
        for r in pool.imap_unordered(run_one, todo):
            results.append(r)
            print(f"[{len(results)}/{len(todo)}] {r['row']} / {r['schedule']} seed {r['seed']}: recombination "
                  f"{r['rec_batch']:.3f} (BN batch), {r['rec_running']:.3f} (BN running), tasks {r['task']:.3f}, "
                  f"{r['seconds']:.0f}s", file=sys.stderr, flush=True)
    summary = summarise(results)
    text = markdown(summary, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()},
               "wall_seconds": time.perf_counter() - start, "runs": sorted(results, key=lambda r: (r["row"], r["schedule"], r["seed"])),
               **summary}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
