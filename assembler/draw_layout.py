"""The layout of pictures (draw.py): a network's bindings as boxes in rows, and the arrows
between them; the rows and positions come from a small Sugiyama-style layering."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx

CW, LH, PAD = 7.0, 14, 8  # px: char width (11px mono, generous), line height, padding


@dataclass
class Box:
    """One binding as drawn; `x` is its centre and `y` its top, set by the SVG layout."""

    network: str
    name: str
    kind: str  # a key of FILL
    shape: str
    lines: list[str]  # the op summary
    tag: str = ""  # frozen, imported from ALIAS, shared KEY, parameter count
    shared: bool = False
    gate: bool = False
    x: float = 0.0
    y: float = 0.0

    def __post_init__(self):
        head = len(self.name) * 7.6 + 12 + len(self.shape) * 6.4 + (14 if self.kind == "frozen" else 0)
        self.w = max(112.0, head, *(len(s) * CW for s in self.lines), len(self.tag) * 6.4) + 2 * PAD
        self.h = 2 * PAD + LH * (1 + len(self.lines)) + (12 if self.tag else 0)


@dataclass
class Link:
    """A data-flow arrow between bindings of one network: kind data, main (a gate's main path) or
    proxy (a gate path through a proxy); `alpha` is the gate weight of the path when known."""

    src: str
    dst: str
    kind: str
    width: float
    note: str = ""
    alpha: float | None = None


@dataclass
class _Column:
    name: str
    boxes: dict[str, Box]
    links: list[Link]
    layers: list[list[str]] = field(default_factory=list)  # box names and dummies, top to bottom
    x: dict[str, float] = field(default_factory=dict)
    routes: list[list[str]] = field(default_factory=list)  # per link, the dummies it passes


def _mean(pairs, val, default):
    total = sum(w for _, w in pairs)
    return sum(val[u] * w for u, w in pairs) / total if total else default


def _pack(layer: list[str], width, want: dict) -> dict[str, float]:
    """Centres in `layer`'s order, no closer than their gaps, nearest to `want` in weighted least
    squares (boxes weigh more than dummies, so chains stay straight): pool adjacent violators."""
    offset = [0.0]
    for a, b in zip(layer, layer[1:]):
        offset.append(offset[-1] + (width(a) + width(b)) / 2 + 18)
    blocks: list[list[float]] = []  # [value, weight, count]
    for v, o in zip(layer, offset):
        blocks.append([want[v] - o, 0.2 if width(v) < 10 else 10.0, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (v2, w2, n2), (v1, w1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    ys = [value for value, _, n in blocks for _ in range(int(n))]
    return {v: y + o for v, y, o in zip(layer, ys, offset)}


def _arrange(c: _Column) -> None:
    """Sugiyama-lite: layers by topological generation, a dummy in each layer a long link crosses,
    barycentre ordering sweeps, then centres pulled towards their neighbours (main paths pull hardest)."""
    if not c.layers:
        g = nx.DiGraph()
        g.add_nodes_from(c.boxes)
        g.add_edges_from((l.src, l.dst) for l in c.links)
        c.layers = [sorted(gen, key=list(c.boxes).index) for gen in nx.topological_generations(g)]
    level = {v: i for i, layer in enumerate(c.layers) for v in layer}
    nbrs = (defaultdict(list), defaultdict(list))  # (neighbours above, below) with weights
    for k, l in enumerate(c.links):
        c.routes.append([f"\0{k}.{j}" for j in range(level[l.src] + 1, level[l.dst])])
        for j, d in enumerate(c.routes[-1]):
            c.layers[level[l.src] + 1 + j].append(d)
        pts = [l.src, *c.routes[-1], l.dst]
        for u, v in zip(pts, pts[1:]):
            nbrs[0][v].append((u, 1 if l.kind == "proxy" else 8))
            nbrs[1][u].append((v, 1 if l.kind == "proxy" else 8))
    pos = {v: i for layer in c.layers for i, v in enumerate(layer)}
    c.x = {v: 0.0 for v in pos}
    for sweep in range(14):
        nb = nbrs[sweep % 2]
        for layer in c.layers if sweep % 2 == 0 else c.layers[::-1]:
            if sweep < 6:
                layer.sort(key=lambda v: _mean(nb[v], pos, pos[v]))
                pos.update({v: i for i, v in enumerate(layer)})
            else:
                c.x.update(_pack(layer, lambda v: c.boxes[v].w if v in c.boxes else 4,
                                 {v: _mean(nb[v], c.x, c.x[v]) for v in layer}))
