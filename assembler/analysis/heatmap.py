"""A candidates x layers heat map of a Ranking as a standalone SVG (no plotting library).

One panel per per-layer method (DEPARA, LogME), candidates as rows in rank order, layers as
columns in each network's order (networks of different depths leave cells empty); each panel
has its own colour scale, and the layer each method selects is outlined. LEEP, a score per
model, gets a one-column panel.
"""

from __future__ import annotations

from html import escape

from .rank import LAYERED, Ranking

__all__ = ["to_svg"]

CELL_W, CELL_H, GAP = 64, 34, 28
LABEL_W, TOP = 12, 58
# Viridis at five stops: perceptually even, readable in grey and by colour-blind readers.
_STOPS = [(0.267, 0.005, 0.329), (0.229, 0.322, 0.546), (0.128, 0.567, 0.551), (0.369, 0.789, 0.383),
          (0.993, 0.906, 0.144)]


def _colour(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_STOPS) - 1)
    i = min(int(t), len(_STOPS) - 2)
    f = t - i
    rgb = [a + (b - a) * f for a, b in zip(_STOPS[i], _STOPS[i + 1])]
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _panels(r: Ranking) -> list[tuple[str, list[list[tuple[str, float, bool]]]]]:
    """Per method: per candidate, cells (layer, value, selected)."""
    out = []
    for m in r.settings.methods:
        if m in LAYERED:
            rows = []
            for c in r.candidates:
                best = c.best(m)
                rows.append([(row.layer, row.scores[m], row is best) for row in c.layers if m in row.scores])
            out.append((m, rows))
        elif m == "leep":
            out.append((m, [[("", c.leep, False)] if c.leep is not None else [] for c in r.candidates]))
    return out


def to_svg(r: Ranking) -> str:
    """The heat map as SVG text."""
    names = [c.label for c in r.candidates]
    label_w = LABEL_W + 7 * max((len(n) for n in names), default=4)
    panels = _panels(r)
    widths = [max((len(row) for row in rows), default=1) * CELL_W for _, rows in panels]
    width = label_w + sum(widths) + GAP * len(panels) + 10
    height = TOP + CELL_H * len(names) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(_title(r))}</text>']
    for i, name in enumerate(names):
        y = TOP + i * CELL_H + CELL_H / 2 + 4
        out.append(f'<text x="{label_w - 8}" y="{y:.1f}" text-anchor="end">{i + 1}. {escape(name)}</text>')
    x = label_w
    for (method, rows), w in zip(panels, widths):
        out += _panel(method, rows, x)
        x += w + GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _title(r: Ranking) -> str:
    t = f"transferability to {r.probe.name} ({len(r.probe.y)} probes)"
    return t + (f", target {r.target.label}" if r.target is not None else "")


def _panel(method: str, rows, x0: float) -> list[str]:
    values = [v for row in rows for _, v, _ in row]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = hi - lo or 1.0
    title = {"depara": "DEPARA", "logme": "LogME", "leep": "LEEP"}[method]
    out = [f'<text x="{x0}" y="{TOP - 20}" font-weight="bold">{title}</text>',
           f'<text x="{x0}" y="{TOP - 7}" fill="#555">{lo:.3g} .. {hi:.3g}</text>']
    outlines = []  # drawn last, so neighbouring cells do not cover them
    for i, row in enumerate(rows):
        y = TOP + i * CELL_H
        for j, (layer, v, chosen) in enumerate(row):
            t = (v - lo) / span
            x = x0 + j * CELL_W
            ink = "black" if t > 0.55 else "white"
            if chosen:
                outlines.append(f'<rect x="{x + 1.5}" y="{y + 1.5}" width="{CELL_W - 3}" height="{CELL_H - 3}" '
                                'fill="none" stroke="black" stroke-width="3"/>')
            out.append(f'<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" fill="{_colour(t)}" stroke="white">'
                       f'<title>{escape(layer or method)}: {v:.6g}</title></rect>')
            out.append(f'<text x="{x + CELL_W / 2}" y="{y + 14}" text-anchor="middle" fill="{ink}">{v:.3f}</text>')
            if layer:
                out.append(f'<text x="{x + CELL_W / 2}" y="{y + 27}" text-anchor="middle" fill="{ink}" '
                           f'font-size="9">{escape(layer)}</text>')
    return out + outlines
