"""Statistics and the markdown report of benchmarks/rank_digits.py: rank correlations with
the ground truth, precision@3, permutation p-values, layer-selection hit rates and regret, the
lambda sweep."""

from __future__ import annotations

import numpy as np

from assembler.analysis import spearman
from assembler.analysis.depara import rankdata

LAYERS = ("c1", "c2", "c3", "c4")


# ---------------------------------------------------------------------------------------------
# Statistics


def precision_at(k: int, scores, truth) -> float:
    top = lambda v: set(np.argsort(-np.asarray(v), kind="stable")[:k])  # noqa: E731
    return len(top(scores) & top(truth)) / k


def permutation_p(per_target: list[tuple[list[float], list[float]]], draws: int = 20000, seed: int = 0) -> float:
    """One-sided p of the mean Spearman rho over targets against rankings drawn at random
    (each target's scores permuted independently)."""
    rng = np.random.default_rng(seed)
    observed, null = 0.0, np.zeros(draws)
    for scores, truth in per_target:
        a, b = rankdata(scores), rankdata(truth)
        a, b = (a - a.mean()) / np.linalg.norm(a - a.mean()), (b - b.mean()) / np.linalg.norm(b - b.mean())
        observed += float(a @ b)
        perms = np.argsort(rng.random((draws, len(a))), axis=1)
        null += a[perms] @ b
    return float((1 + np.sum(null >= observed - 1e-12)) / (draws + 1))


def model_selection(results: dict, truth_key: str) -> dict:
    """Per method: rho per target, mean rho, mean precision@3 and the permutation p."""
    methods = list(next(iter(results.values()))["scores"]["0-9"].keys())
    out = {}
    for method in methods:
        pairs, rhos, p3 = [], [], []
        for t, r in results.items():
            names = list(r["scores"])
            s = [r["scores"][n][method] for n in names]
            g = [r["truth"]["sources"][n][truth_key] for n in names]
            pairs.append((s, g))
            rhos.append(spearman(s, g))
            p3.append(precision_at(3, s, g))
        out[method] = {"rho": rhos, "mean_rho": float(np.mean(rhos)), "p@3": float(np.mean(p3)),
                       "p": permutation_p(pairs)}
    return out


def layer_selection(results: dict, prefix: str) -> dict:
    """Per method: how often its layer is the best by `prefix`@layer accuracy, the mean
    accuracy lost against the best layer, and how often it chose each layer; last, what a
    layer drawn at random would do on average."""
    methods = list(next(iter(results.values()))["layers"]["0-9"].keys())
    out = {}
    for method in methods:
        hits, regret, chosen_count = [], [], dict.fromkeys(LAYERS, 0)
        for r in results.values():
            for name, choice in r["layers"].items():
                chosen = choice[method]
                acc = {k: r["truth"]["sources"][name][f"{prefix}@{k}"] for k in LAYERS}
                best = max(acc.values())
                hits.append(acc[chosen] >= best - 1e-9)
                regret.append(best - acc[chosen])
                chosen_count[chosen] += 1
        out[method] = {"hit_rate": float(np.mean(hits)), "regret": float(np.mean(regret)), "pairs": len(hits),
                       "chosen": chosen_count}
    hits, regret = [], []
    for r in results.values():
        for name in r["layers"]:
            acc = [r["truth"]["sources"][name][f"{prefix}@{k}"] for k in LAYERS]
            hits.append(np.mean([a >= max(acc) - 1e-9 for a in acc]))
            regret.append(max(acc) - np.mean(acc))
    out["random layer (expected)"] = {"hit_rate": float(np.mean(hits)), "regret": float(np.mean(regret)),
                                      "pairs": len(hits), "chosen": None}
    return out


def lambda_sweep(results: dict, lams=(0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0)) -> dict:
    """Model selection (at c4, vs FT) and layer selection (vs FT@l) as lambda varies."""
    out = {}
    for lam in lams:
        rhos, hits = [], []
        for r in results.values():
            names = list(r["parts"])
            s = [r["parts"][n]["c4"][0] + lam * r["parts"][n]["c4"][1] for n in names]
            rhos.append(spearman(s, [r["truth"]["sources"][n]["FT"] for n in names]))
            for n in names:
                chosen = max(LAYERS, key=lambda k: r["parts"][n][k][0] + lam * r["parts"][n][k][1])
                acc = {k: r["truth"]["sources"][n][f"FT@{k}"] for k in LAYERS}
                hits.append(acc[chosen] >= max(acc.values()) - 1e-9)
        out[str(lam)] = {"mean_rho_FT": float(np.mean(rhos)), "layer_hit_FT": float(np.mean(hits))}
    return out


# ---------------------------------------------------------------------------------------------
# Report


def _f(v, digits=2) -> str:
    return f"{v:.{digits}f}"


def _p(v: float) -> str:
    return "<0.0001" if v < 1e-4 else f"{v:.4f}"


def report(res: dict) -> str:
    """The results as markdown: setup, model selection, layer selection, DEPARA's nodes,
    lambda, speed and the ground truth."""
    targets = list(res["targets"])
    setup = res["setup"]
    out = [f"# `assembler rank` on digits: validation ({setup['sources']} sources, {len(targets)} few-label "
           f"targets, {setup['seeds']} seeds)", "",
           f"Command: `{setup['command']}` ({setup['minutes']:.1f} min on {setup['threads']} thread).", "",
           "Targets: " + "; ".join(f"{t} ({res['targets'][t]['labels']} labels, from scratch "
                                   f"{_f(res['targets'][t]['truth']['scratch'], 3)})" for t in targets) + ".", ""]
    for key, title in (("FT", "fine-tuning every layer (FT)"), ("LP@c4", "a linear probe on c4 (LP@c4)")):
        out += _model_table(res, key, title)
    return "\n".join(out + _layer_table(res) + _node_table(res) + _lambda_table(res) + _speed(res["speed"])
                     + _truth_table(res)) + "\n"


def _model_table(res: dict, key: str, title: str) -> list[str]:
    targets = list(res["targets"])
    out = [f"## Model selection against {title}", "",
           "| method | " + " | ".join(f"rho {t}" for t in targets) + " | mean rho | P@3 | p |",
           "|---|" + "---|" * (len(targets) + 3)]
    for m, v in res["model_selection"][key].items():
        out.append(f"| {m} | " + " | ".join(_f(r) for r in v["rho"]) +
                   f" | **{_f(v['mean_rho'])}** | {_f(v['p@3'])} | {_p(v['p'])} |")
    return out + [f"\nA random ranking has rho 0 and P@3 {3 / res['setup']['sources']:.2f} on average; p: the mean "
                  "rho's one-sided permutation p-value.", ""]


def _layer_table(res: dict) -> list[str]:
    out = ["## Layer selection (c1-c4 of every source, every target)", "",
           "| method | hit rate vs FT@l | acc. lost vs FT@l | hit rate vs LP@l | acc. lost vs LP@l | chosen c1/c2/c3/c4 |",
           "|---|---|---|---|---|---|"]
    ft, lp = res["layer_selection"]["FT"], res["layer_selection"]["LP"]
    for m in ft:
        chosen = "/".join(str(v) for v in ft[m]["chosen"].values()) if ft[m]["chosen"] else "-"
        out.append(f"| {m} | {_f(ft[m]['hit_rate'])} | {_f(100 * ft[m]['regret'], 1)} pt | "
                   f"{_f(lp[m]['hit_rate'])} | {_f(100 * lp[m]['regret'], 1)} pt | {chosen} |")
    return out + [f"\n{ft['DEPARA (eq. 6)']['pairs']} (target, source) pairs; a hit is a layer within 1e-9 of the "
                  "best mean accuracy.", ""]


def _node_table(res: dict) -> list[str]:
    out = ["## DEPARA's node term against the input itself", "",
           "| target | s_V of the input itself, cos(x, target node) | s_V of sources (min .. max) | s_V untrained "
           "| s_V shuffled | rho(s_V, cos(x, source node)) |", "|---|---|---|---|---|---|"]
    for t, r in res["targets"].items():
        n, sv = r["nodes"], r["nodes"]["s_V"]
        out.append(f"| {t} | {_f(n['target_vs_input'], 3)} | {_f(min(sv.values()), 3)} .. {_f(max(sv.values()), 3)} "
                   f"| {_f(sv['untrained'], 3)} | {_f(sv.get('0-9 shuffled', float('nan')), 3)} "
                   f"| {_f(n['rho_sV_vs_input_likeness'])} |")
    return out + [""]


def _lambda_table(res: dict) -> list[str]:
    out = ["## DEPARA's lambda (s = s_V + lambda * s_E)", "",
           "| lambda | mean rho vs FT (c4) | layer hit rate vs FT@l |", "|---|---|---|"]
    return out + [f"| {lam} | {_f(v['mean_rho_FT'])} | {_f(v['layer_hit_FT'])} |" for lam, v in res["lambda"].items()] \
        + [""]


def _speed(s: dict) -> list[str]:
    return ["## Speed", "",
            f"{s['layers']} candidate layers x {s['probes']} probes (two source.net-sized candidates, all three "
            f"methods, target included): **{s['seconds']:.2f} s** wall on {s['threads']} CPU thread (fastest of 3; "
            f"{s['cpu_seconds']:.2f} s of CPU time; the machine's load average was {s['load_average']:.1f}), peak "
            f"memory {s['peak_rss_mib']:.0f} MiB ({s['peak_increase_mib']:.0f} MiB above the "
            f"{s['rss_before_mib']:.0f} MiB of the loaded process).", ""]


def _truth_table(res: dict) -> list[str]:
    targets = list(res["targets"])
    out = ["## Ground truth (accuracy, mean over seeds)", "",
           "| source | " + " | ".join(f"{t} FT | {t} LP@c4" for t in targets) + " |",
           "|---|" + "---|---|" * len(targets)]
    for name in res["targets"][targets[0]]["truth"]["sources"]:
        cells = [_f(res["targets"][t]["truth"]["sources"][name][k], 3) for t in targets for k in ("FT", "LP@c4")]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out
