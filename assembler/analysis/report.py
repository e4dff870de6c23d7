"""A Ranking for people (aligned tables) and for scripts (plain JSON-able data)."""

from __future__ import annotations

from .rank import LAYERED, CandidateScore, Ranking

__all__ = ["to_json", "to_text"]


def to_json(r: Ranking) -> dict:
    """Everything `rank --json` prints: candidates best first, each with its layers in the
    network's order."""
    s = r.settings
    return {
        "methods": list(s.methods),
        "sorted_by": s.primary,
        "probe": {"data": r.probe.name, "samples": len(r.probe.y), "classes": int(r.probe.y.unique().numel())},
        "target": None if r.target is None else {"model": r.target.label, "layer": r.target.layer},
        "depara": {"lambda": s.lam, "scalar": s.scalar} if "depara" in s.methods else None,
        "candidates": [_candidate_json(c, i + 1, s.methods) for i, c in enumerate(r.candidates)],
    }


def _candidate_json(c: CandidateScore, place: int, methods) -> dict:
    return {
        "rank": place,
        "candidate": c.label,
        "network": c.network,
        "score": {m: c.score(m) for m in methods},
        "model_layer": {m: c.model_layer(m).layer for m in methods if m in LAYERED and c.model_layer(m)},
        "best_layer": {m: c.best(m).layer for m in methods if m in LAYERED and c.best(m)},
        "leep": c.leep,
        "layers": [{"layer": row.layer, "shape": list(row.shape), "features": row.dims,
                    **({"depara": {"nodes": row.depara.nodes, "edges": row.depara.edges,
                                   "score": row.scores["depara"]}} if row.depara else {}),
                    **({"logme": row.scores["logme"]} if "logme" in row.scores else {})}
                   for row in c.layers],
        "notes": list(c.notes),
    }


def to_text(r: Ranking) -> str:
    """The model ranking, then every (candidate, layer) best first, methods side by side."""
    s = r.settings
    layered = [m for m in s.methods if m in LAYERED]
    title = (f"models, best first by {s.primary} at each candidate's encoder layer (eq. 5); best layer: eq. 6"
             if s.primary in LAYERED else f"models, best first by {s.primary}")
    lines = [_header(r), "", title] + _table(_model_rows(r))
    if layered:
        key = s.primary if s.primary in LAYERED else layered[0]
        lines += ["", f"layers (best first by {key}; * marks each candidate's chosen layer)"]
        lines += _table(_layer_rows(r, key, layered))
    notes = [f"note: {c.label}: {n}" for c in r.candidates for n in c.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def _header(r: Ranking) -> str:
    s = r.settings
    out = f"probe: {r.probe.name}, {len(r.probe.y)} images"
    if r.target is not None:
        what = "|F(x)|" if s.scalar == "norm" else "mean F(x)"
        out += (f"\ntarget: {r.target.label} at {r.target.layer}; DEPARA = s_V + {s.lam:g} * s_E, "
                f"nodes x * d {what} / dx")
    return out


def _model_rows(r: Ranking) -> list[list[str]]:
    methods = r.settings.methods
    layered = [m for m in methods if m in LAYERED]
    rows = [["rank", "candidate"] + (["layer"] if layered else []) + list(methods) +
            [f"best layer ({m})" for m in layered]]
    for i, c in enumerate(r.candidates):
        at = [c.model_layer(layered[0]).layer] if layered else []
        rows.append([str(i + 1), c.label] + at + [_num(c.score(m)) for m in methods] +
                    [c.best(m).layer for m in layered])
    return rows


def _layer_rows(r: Ranking, key: str, layered: list[str]) -> list[list[str]]:
    depara = "depara" in layered
    head = ["candidate", "layer", "shape"] + (["s_V", "s_E"] if depara else []) + layered
    entries = [(c, row) for c in r.candidates for row in c.layers]
    entries.sort(key=lambda e: -e[1].scores[key])
    rows = [head]
    for c, row in entries:
        mark = " *" if c.best(key) is row else ""
        parts = [c.label, row.layer + mark, "x".join(map(str, row.shape))]
        if depara:
            parts += [_num(row.depara.nodes), _num(row.depara.edges)]
        rows.append(parts + [_num(row.scores.get(m)) for m in layered])
    return rows


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(_is_number(row[i]) for row in rows[1:]) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
                             ).rstrip() for row in rows]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text == "-"
