"""NetTailor's structure and last stage (paper 001, section 3.5): the paths of a network's
gates with their relative costs, what to prune for a given k, the pruned Assembly, the choice
of the leanest network within `tolerance` of the reference, and the table over k. The result
is an ordinary spec: removed blocks gone, single-path gates collapsed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..assemble import compile as compile_spec
from ..checkpoint import attach_imports
from ..compiler import copy_weights
from ..edits import prune_with_map
from ..graph import CheckedNetwork
from ..resolve import expand


@dataclass(frozen=True)
class GatePath:
    gate: str  # module key of the gate
    binding: str  # the gated binding (node j)
    index: int  # path index in the gate
    source: str | None  # the gated binding it reads (node i), None for an input or ungated value
    cost: float  # the path's FLOPs over the network's FLOPs without proxies
    proxy: bool  # a task-specific proxy (else a pre-trained block)


def gate_paths(net: CheckedNetwork) -> list[GatePath]:
    """Every path of every gate of a network, with the binding it reads and its relative cost."""
    gates = {n.binding: n for n in net.nodes if n.op == "gate"}
    by_name = {n.name: n for n in net.nodes}
    found, proxy_flops = [], 0
    for g in gates.values():
        for i, last in enumerate(g.inputs):
            nodes, frontier, source = [], [last], None
            while frontier:
                cur = by_name[frontier.pop()]
                if cur.binding != g.binding or cur.op == "input":
                    source = cur.binding
                    continue
                nodes.append(cur)
                frontier.extend(cur.inputs)
            flops = sum(n.flops for n in nodes)
            proxy = any(n.role == "proxy" for n in nodes)
            proxy_flops += flops if proxy else 0
            found.append((g, i, source if source in gates else None, flops, proxy))
    total = max(1, sum(n.flops for n in net.nodes) - proxy_flops - sum(g.flops for g in gates.values()))
    return [GatePath(g.module, g.binding, i, src, flops / total, proxy) for g, i, src, flops, proxy in found]


def removable_blocks(net: CheckedNetwork) -> int:
    """How many pre-trained blocks (gate paths without proxies) pruning can remove."""
    return sum(not p.proxy for p in gate_paths(net))


def pruning_plan(net: CheckedNetwork, modules: dict, threshold: float, k: int) -> tuple[list[str], list[str]]:
    """What to remove: proxies with alpha < threshold, and the k pre-trained blocks (gate paths
    without proxies) with the smallest alpha, as `edits.prune` items. Returns (items, removed
    blocks)."""
    paths = gate_paths(net)
    with torch.no_grad():
        alphas = {p.gate: modules[p.gate].alphas().tolist() for p in paths}
    items = [f"{p.binding}.in{p.index}" for p in paths if p.proxy and alphas[p.gate][p.index] < threshold]
    blocks = sorted((alphas[p.gate][p.index], p.binding, p.index) for p in paths if not p.proxy)
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


def choose(rows: list[dict], reference: float, tolerance: float) -> dict | None:
    """The leanest candidate within `tolerance` of the reference accuracy (ties: the more
    accurate); the most accurate when none is."""
    done = [r for r in rows if "accuracy" in r]
    good = [r for r in done if r["accuracy"] >= reference - tolerance]
    if good:
        return min(good, key=lambda r: (r["flops"], -r["accuracy"], r["k"]))
    return max(done, key=lambda r: (r["accuracy"], -r["k"]), default=None)


def table(summary: dict) -> str:
    lines = [f"on held-out training data: teacher {summary['teacher_val_accuracy']:.4f}, untailored student "
             f"{summary['student_val_accuracy']:.4f} ({summary['student_params']:,} params, "
             f"{summary['student_flops']:,} FLOPs); reference {summary['reference_accuracy']:.4f}",
             f"{'k':>3}  {'params':>9}  {'FLOPs':>10}  {'val acc':>8}  {'test acc':>8}  removed blocks"]
    for r in summary["tailor"]:
        if "skipped" in r:
            lines.append(f"{r['k']:>3}  skipped: {r['skipped']}")
            continue
        mark = "  <- kept" if r["k"] == summary["chosen_k"] else ""
        t = f"{r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else "-"
        lines.append(f"{r['k']:>3}  {r['params']:>9,}  {r['flops']:>10,}  {r['accuracy']:>8.4f}  {t:>8}  "
                     f"{', '.join(r['removed_blocks']) or '-'} (+{r['removed_proxies']} proxies){mark}")
    return "\n".join(lines)
