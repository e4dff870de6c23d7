"""NetTailor's structure and last stage (paper 001, section 3.5): the paths of a network's
gates with their relative costs, what to prune for a given k, the pruned Assembly, the choice
of the leanest (or fastest) network within `tolerance` of the reference, and the table over k.
The result is an ordinary spec: removed blocks gone, single-path gates collapsed."""

from __future__ import annotations

import copy
import statistics

import torch

from ..assemble import compile as compile_spec
from ..checkpoint import attach_imports
from ..compiler import copy_weights
from ..edits import prune_with_map
from ..graph import CheckedNetwork, GatePath, gate_paths
from ..inference import example_inputs, interleaved_latency, median_ratio, optimize
from ..resolve import expand


def path_costs(net: CheckedNetwork, paths: list[GatePath]) -> list[float]:
    """Each gate path's FLOPs over the network's FLOPs without proxies and gates (the C_i of
    E[C]), in the order of `paths`."""
    gates = {p.gate.name: p.gate.flops for p in paths}
    total = sum(n.flops for n in net.nodes) - sum(p.flops for p in paths if p.proxy) - sum(gates.values())
    return [p.flops / max(1, total) for p in paths]


def removable_blocks(net: CheckedNetwork) -> int:
    """How many pre-trained blocks (gate paths without proxies) pruning can remove."""
    return sum(not p.proxy for p in gate_paths(net))


def pruning_plan(net: CheckedNetwork, modules: dict, threshold: float, k: int) -> tuple[list[str], list[str]]:
    """What to remove: proxies with alpha < threshold, and the k pre-trained blocks (gate paths
    without proxies) with the smallest alpha, as `edits.prune` items. Returns (items, removed
    blocks)."""
    if k < 0:
        raise ValueError(f"k = {k}: the number of blocks to remove cannot be negative")
    paths = gate_paths(net)
    with torch.no_grad():
        alphas = {p.gate.module: modules[p.gate.module].alphas().tolist() for p in paths}
    items = [f"{p.gate.binding}.in{p.index}" for p in paths if p.proxy and alphas[p.gate.module][p.index] < threshold]
    blocks = sorted((alphas[p.gate.module][p.index], p.gate.binding, p.index) for p in paths if not p.proxy)
    removed = blocks[:k]
    return items + [f"{b}.in{i}" for _, b, i in removed], [b for _, b, _ in removed]


def prune_assembly(asm, student: str, threshold: float, k: int, seed: int = 0):
    """Prune a trained Assembly's student: (new Assembly with the surviving weights, removed
    pre-trained blocks, removed items). The new Assembly shares the imports of the old one."""
    net = asm.checked.networks[student]
    items, removed = pruning_plan(net, asm.modules, threshold, k)
    pruned, keymap, kept = prune_with_map(expand(asm.spec), student, items)
    new = compile_spec(pruned, seed=seed, imports=False)
    attach_imports(new, reuse=asm.imports)
    copy_weights(asm, new, keymap, kept, network=student)
    return new, removed, items


class Latency:
    """Measured CPU latency against the teacher: both inference-compiled (`assembler.inference`:
    gates fixed, batch-norm folded, shared pools, channels-last), timed in interleaved rounds;
    per batch size (1 and 256) the median over rounds of time(network) / time(teacher) and the
    network's median milliseconds."""

    BATCHES = (1, 256)

    def __init__(self, teacher, inputs: dict[str, tuple[int, ...]], rounds: int = 21):
        self.shapes = inputs  # the networks' input shapes (without the batch)
        self.inputs = {b: example_inputs(inputs, batch=b) for b in self.BATCHES}
        self.rounds = rounds
        self.teacher = _fast(teacher, inputs)

    def __call__(self, gm) -> dict:
        fast = _fast(gm, self.shapes)
        out = {}
        for b, x in self.inputs.items():
            times = interleaved_latency({"net": fast, "teacher": self.teacher}, x, rounds=self.rounds,
                                        number=10 if b == 1 else 1, warmup=3)
            out[f"b{b}"] = round(median_ratio(times, "net", "teacher"), 4)
            out[f"ms_b{b}"] = round(statistics.median(times["net"]) * 1e3, 4)
            out[f"teacher_ms_b{b}"] = round(statistics.median(times["teacher"]) * 1e3, 4)
        return out


def _fast(gm, inputs: dict):
    """The inference compilation of a copy of `gm` on the CPU (the training graph stays put)."""
    cpu = copy.deepcopy(gm).cpu()
    return optimize(cpu, check_with=example_inputs(inputs, batch=2))


def choose(rows: list[dict], reference: float, tolerance: float, cost: str = "flops") -> dict | None:
    """The candidate of least `cost` whose held-out accuracy is at least `reference - tolerance`
    (ties: the more accurate, then the leaner); the most accurate when none is (ties: the
    leanest). cost "flops": FLOPs (the paper); "latency": the larger of the measured batch-1
    and batch-256 latency ratios against the teacher (a candidate not measured counts as
    infinitely slow), ties broken by FLOPs."""
    done = [r for r in rows if "accuracy" in r]
    good = [r for r in done if r["accuracy"] >= reference - tolerance - 1e-12]
    if good:
        if cost == "latency":
            return min(good, key=lambda r: (latency_cost(r), r["flops"], -r["accuracy"], r["k"]))
        return min(good, key=lambda r: (r["flops"], -r["accuracy"], r["k"]))
    return max(done, key=lambda r: (r["accuracy"], -r["flops"], -r["k"]), default=None)


def latency_cost(row: dict) -> float:
    """A candidate's measured latency against the teacher: the larger of its batch ratios."""
    ratios = [v for b, v in (row.get("latency") or {}).items() if b in {f"b{n}" for n in Latency.BATCHES}]
    return max(ratios) if ratios else float("inf")


def slower_note(summary: dict) -> str | None:
    """A warning when the kept network has fewer FLOPs than the teacher yet measured slower at
    some batch size (FLOPs leave out the fixed cost of each operator call and the memory
    traffic of pools), else None."""
    row = next((r for r in summary["tailor"] if r.get("k") == summary["chosen_k"] and "skipped" not in r), None)
    latency, tf = (row or {}).get("latency") or {}, summary.get("teacher_flops") or 0
    slow = [(n, latency[f"b{n}"]) for n in Latency.BATCHES if latency.get(f"b{n}", 0) > 1.0]
    if not slow or not tf or row["flops"] >= tf:
        return None
    where = " and ".join(f"{t:.2f}x its time at batch {n}" for n, t in slow)
    fix = ('cost="latency" keeps the fastest network within tolerance instead' if summary.get("cost") != "latency"
           else "no candidate within tolerance runs faster")
    return (f"the kept network (k={row['k']}) has {row['flops'] / tf:.1%} of the teacher's FLOPs but runs {where} on "
            f"this CPU (both inference-compiled): each operator call costs about as much as a small layer's "
            f"arithmetic, and the proxies' pools are memory-bound; {fix}")


def _cell(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(summary: dict) -> str:
    """The accuracy-vs-cost curve over k: held-out and test accuracy, parameters, FLOPs (share
    of the teacher's) and measured latency (the teacher's = 1), the kept network marked, and
    the recorded `slower_than_teacher` warning."""
    s = summary
    tf = s.get("teacher_flops") or 0
    lat = lambda latency, b: _cell((latency or {}).get(b), ".2f")  # noqa: E731
    note = "" if s.get("teacher_held_out") is True else "  (the teacher may have trained on them: see the warning)"
    lines = [f"held out: {s['held_out']} samples ({s['validation']:.0%} of the training data){note}",
             f"teacher: held-out {s['teacher_val_accuracy']:.4f}, test {_cell(s['teacher_accuracy'], '.4f')}, "
             f"{tf:,} FLOPs; keep the {'fastest' if s.get('cost') == 'latency' else 'leanest'} k with held-out "
             f"accuracy >= {s['teacher_val_accuracy']:.4f} - "
             f"{s['tolerance']} = {s['teacher_val_accuracy'] - s['tolerance']:.4f}",
             f"{'k':>3}  {'params':>9}  {'FLOPs':>10}  {'/teacher':>8}  {'held-out':>8}  {'test':>6}  "
             f"{'t/T b1':>6}  {'t/T b256':>8}  removed blocks",
             f"{'-':>3}  {s['student_params']:>9,}  {s['student_flops']:>10,}  "
             f"{_cell(s['student_flops'] / tf if tf else None, '>8.1%')}  {s['student_val_accuracy']:>8.4f}  "
             f"{_cell(s.get('student_test_accuracy'), '>6.4f')}  {lat(s.get('student_latency'), 'b1'):>6}  "
             f"{lat(s.get('student_latency'), 'b256'):>8}  untailored (every proxy)"]
    for r in s["tailor"]:
        if "skipped" in r:
            lines.append(f"{r['k']:>3}  skipped: {r['skipped']}")
            continue
        mark = "  <- kept" if r["k"] == s["chosen_k"] else ""
        lines.append(f"{r['k']:>3}  {r['params']:>9,}  {r['flops']:>10,}  {_cell(r['flops'] / tf if tf else None, '>8.1%')}"
                     f"  {r['accuracy']:>8.4f}  {_cell(r.get('test_accuracy'), '>6.4f')}  {lat(r.get('latency'), 'b1'):>6}  "
                     f"{lat(r.get('latency'), 'b256'):>8}  {', '.join(r['removed_blocks']) or '-'} (+{r['removed_proxies']} "
                     f"proxies){mark}")
    note = s.get("slower_than_teacher")  # NetTailor.finish records slower_note's warning
    return "\n".join(lines + ([f"note: {note}"] if note else []))
