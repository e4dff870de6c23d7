"""Summaries of checked networks for people and scripts: per-network totals, per-binding rows,
and number formatting. `check`, `show`, `demo` and the reports read them; they read only the
checked IR (and, for `learned_weights`, an Assembly's learned gate alphas)."""

from __future__ import annotations

import math


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_flops(n: int) -> str:
    """`1.23 M` (then the caller's unit); integer arithmetic, so that no count overflows."""
    for unit, size in (("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            whole, part = divmod((n * 100 + size // 2) // size, 100)  # rounded, as "{:.2f}" would
            return f"{whole:,}.{part:02d} {unit}"
    return f"{n} "


def fmt_bytes(n: int) -> str:
    """`284 KB`, `1.5 GB`: a size in bytes (powers of 1024), integer arithmetic."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            whole, part = divmod(n * 10 // size, 10)
            return f"{whole:,}.{part} {unit}" if whole < 100 else f"{whole:,} {unit}"
    return f"{n} B"


#: Bytes of one number of the compiled networks (float32).
BYTES_PER_NUMBER = 4


def network_summary(checked, name: str) -> dict:
    """Per network: inputs, outputs, parameters (all and trainable), FLOPs, the bytes of its
    weights and of the values one sample computes (float32), and each binding's shape."""
    net = checked.networks[name]
    params = checked.params(name)
    return {
        "inputs": {k: list(v) for k, v in net.inputs.items()},
        "outputs": list(net.outputs),
        "params": params,
        "trainable": checked.params(name, trainable_only=True),
        "flops": checked.flops(name),
        "param_bytes": params * BYTES_PER_NUMBER,
        "activation_bytes": sum(math.prod(n.shape) for n in net.nodes if n.op != "identity") * BYTES_PER_NUMBER,
        "bindings": {b: list(net.node(n).shape) for b, n in net.bindings.items() if b not in net.inputs},
    }


def binding_rows(checked, name: str) -> list[dict]:
    """Per binding: shape, parameters (each module once), FLOPs, trainability and role."""
    net = checked.networks[name]
    rows: dict[str, dict] = {}
    seen: set[str] = set()
    for n in net.nodes:
        if n.op == "input":
            continue
        r = rows.setdefault(n.binding, {"binding": n.binding, "shape": None, "params": 0, "trainable_params": 0,
                                        "flops": 0, "roles": [], "frozen": 0, "trainable": 0})
        r["flops"] += n.flops
        if n.module and n.module not in seen:
            seen.add(n.module)
            r["params"] += checked.modules[n.module].params
            if n.trainable:
                r["trainable_params"] += checked.modules[n.module].params
        if n.module:
            r["trainable" if n.trainable else "frozen"] += 1
        if n.role not in ("layer", "merge") and n.role not in r["roles"]:
            r["roles"].append(n.role)
    for b, node in net.bindings.items():
        if b in rows:
            rows[b]["shape"] = list(net.node(node).shape)
    out = []
    for r in rows.values():
        state = "trainable" if r["trainable"] and not r["frozen"] else "frozen" if r["frozen"] and not r[
            "trainable"] else "mixed" if r["frozen"] else "-"
        out.append({"binding": r["binding"], "shape": r["shape"], "params": r["params"],
                    "trainable_params": r["trainable_params"], "flops": r["flops"], "state": state,
                    "role": ", ".join(r["roles"]) or "layer"})
    return out


def learned_weights(asm) -> dict:
    """Learned gate alphas (and edge lambdas, when recorded in meta.json) of an Assembly."""
    edges = getattr(asm, "meta", {}).get("metrics", {}).get("edge_lambdas")
    return {"gates": asm.gate_alphas(), "edges": edges}


def edge_rows(checked, metrics: dict | None, network: str | None = None) -> list[dict]:
    """The matching edges (into `network`, or all) with the mean and standard deviation of
    their lambda where a checkpoint's final metrics recorded them (`edge_lambdas`,
    `edge_lambda_sds`, aligned with `checked.edges`; None elsewhere)."""
    lams = (metrics or {}).get("edge_lambdas") or []
    sds = (metrics or {}).get("edge_lambda_sds") or []
    return [{"source": e.source, "target": e.target, "weighting": e.weighting,
             "lambda": lams[k] if k < len(lams) else None, "lambda_sd": sds[k] if k < len(sds) else None}
            for k, e in enumerate(checked.edges) if network is None or e.target.split(".", 1)[0] == network]
