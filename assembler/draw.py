"""Pictures of checked networks: Graphviz DOT text, and a standalone SVG laid out here.

One box per binding (inputs too) with its name, shape and a short summary of its ops. Frozen
parts are grey with a dashed border and a padlock; trainable layers green; proxy paths orange;
adapters pink; gates purple (a bar on top of the box, where the gated paths land); shared
modules get a double border, imported blocks an "imported from ALIAS" tag. Matching edges are
dashed and labelled with their weighting. Given `weights` = {"gates": {module_key: [alpha, ...]},
"edges": [lambda per `Checked.edges` entry]}, gate paths and matching edges take their widths
from the learned values, as in the NetTailor and L2T-ww figures. A name in `networks` that is
an import alias draws that import's network (all frozen), so that matching edges from it show.

Pure functions of a `Checked`: nothing here writes files; `assembler graph` does.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections import defaultdict


from .draw_layout import CW, LH, PAD, Box, Link, _arrange, _Column
from .graph import Checked, CheckedNetwork, GatePath, GraphNode, gate_paths
from .keys import BindingRef, ModuleKey
from .ops import entry

FILL = {  # box kind -> (fill, border)
    "input": ("#e3eefa", "#4a6f9a"), "trainable": ("#d6efd4", "#3b8a3b"), "frozen": ("#e2e2e2", "#8a8a8a"),
    "plain": ("#ffffff", "#8a8a8a"), "proxy": ("#fde2bd", "#d9822b"), "adapter": ("#f7d1e4", "#b3316f"),
}
LINK = {"data": "#4d4d4d", "main": "#4d4d4d", "proxy": "#e07b00", "match": "#2b6cb0"}  # arrow colours
GATE = "#7b4fb5"
OWNED = {"imported", "copy", "reference"}  # roles whose ops are summarised by the block they come from
VGAP, TOP = 46, 58  # px: gap between rows, top margin


def _x(s) -> str:
    """Text for XML: characters XML cannot hold dropped, markup characters escaped."""
    return html.escape(re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", "", str(s)), quote=True)


def _q(s) -> str:
    """A DOT double-quoted string."""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\r", "")
    return '"' + s.replace("\n", "\\n") + '"'


def _finite(v) -> float | None:
    """A learned value as a float, or None when it is not a finite number."""
    try:
        return float(v) if math.isfinite(float(v)) else None
    except (TypeError, ValueError):
        return None


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _prefix(key: str) -> str:
    """`pre.c2.0` -> `pre.c2`: a module key without its trailing op indices."""
    return ModuleKey(key).block()


def _op_text(n: GraphNode) -> str:
    """The op's label, from the op table."""
    op = entry(n.op)
    return op.text(n.args, len(n.inputs)) if op is not None else n.op


def _tokens(nodes: list[GraphNode], checked: Checked) -> list[str]:
    """Op summaries; the ops of an imported, copied or referenced block collapse to its name."""
    owners = []
    for n in nodes:
        m = checked.modules.get(n.module) if n.module else None
        owners.append(None if m is None or n.role not in OWNED else
                      f"copy({_prefix(m.init_from or m.key)})" if n.role == "copy" else _prefix(m.key))
    for i in [*range(1, len(nodes)), *range(len(nodes) - 2, -1, -1)]:  # a relu belongs to its block
        if owners[i] is None and nodes[i].role in OWNED and not nodes[i].module:
            owners[i] = owners[i - 1] if i > 0 and owners[i - 1] else owners[i + 1] if i + 1 < len(nodes) else None
    tokens: list[str] = []
    for n, o in zip(nodes, owners):
        if not (o and tokens and tokens[-1] == o):
            tokens.append(o or _op_text(n))
    return tokens


def _wrap(tokens: list[str], width: int = 30) -> list[str]:
    lines = [""]
    for t in tokens:
        if lines[-1] and len(lines[-1]) + 3 + len(t) > width:
            lines[-1] += " →"
            lines.append(t)
        else:
            lines[-1] += (" → " if lines[-1] else "") + t
    return [s for s in lines if s]


def _box(checked: Checked, net: CheckedNetwork, b: str, nodes: list[GraphNode], paths: list[GatePath]) -> Box:
    proxied = [(p.gate, p.nodes) for p in paths if p.proxy]
    side = {n.name for _, p in proxied for n in p}
    core = [n for n in nodes if n.name not in side and n.role != "gate"]
    keyed, roles = [n for n in core if n.module], {n.role for n in nodes}
    kind = ("input" if "input" in roles else "adapter" if "adapter" in roles else "proxy" if not core
            else "plain" if not keyed else "trainable" if any(n.trainable for n in keyed) else "frozen")
    lines = [] if kind == "input" else _wrap(_tokens(core, checked))
    for g in (n for n in nodes if n.role == "gate"):
        k = sum(h is g for h, _ in proxied)
        lines.append((f"⊕ {k} prox{'y' if k == 1 else 'ies'} → " if k else "") + f"gate({len(g.inputs)})")
    mods = [checked.modules[k] for k in dict.fromkeys(n.module for n in nodes if n.module) if k in checked.modules]
    shared = sorted({_prefix(m.key) for m in mods if m.role == "shared"})
    tags = [kind if kind in ("input", "frozen", "adapter") else "",
            *(f"imported from {a}" for a in sorted({m.imported_from for m in mods if m.imported_from})),
            *(f"shared {s}" for s in shared), "reference" if "reference" in roles else "",
            f"{_count(sum(m.params for m in mods))} params" if mods else ""]
    shape = "×".join(map(str, net.node(net.bindings.get(b, nodes[-1].name)).shape))
    return Box(net.name, b, kind, shape, lines, " · ".join(t for t in tags if t), bool(shared),
               any(n.role == "gate" for n in nodes))


def _links(net: CheckedNetwork, groups: dict, paths: dict, weights: dict | None) -> list[Link]:
    gates, links = (weights or {}).get("gates") or {}, []
    for b, nodes in groups.items():
        done = set()
        for g, i, path, sources in paths.get(b, ()):
            alphas = gates.get(g.module) or []
            a = _finite(alphas[i]) if i < len(alphas) else None
            kind = "proxy" if any(n.role == "proxy" for n in path) else "main"
            width = 0.75 + 6 * min(max(a, 0.0), 1.0) if a is not None else (1.6 if kind == "main" else 1.2)
            note = f"{kind} path {i} of {g.module}" + (f", alpha={a:.3f}" if a is not None else "")
            links += [Link(s, b, kind, width, note, a) for s in sources]
            done |= {n.name for n in path} | {g.name}
        srcs = dict.fromkeys(net.node(i).binding for n in nodes if n.name not in done for i in n.inputs)
        links += [Link(s, b, "data", 1.6) for s in srcs if s != b]
    return links


def _column(checked: Checked, name: str, weights: dict | None) -> _Column:
    """A network's boxes and links; for an import alias, the imported network(s) as frozen."""
    if name in checked.networks:
        return _network_column(checked, checked.networks[name], weights)
    if name not in checked.imports:
        raise ValueError(f"no network or import named {name!r}")
    source = checked.imported.get(name)
    if source is None:
        return _stub_column(checked, name)
    single = len(source.networks) == 1
    wanted = [n for n in source.networks if single or any(_end(end)[1].startswith(n + ".")
                                                           for e in checked.edges for end in (e.source, e.target)
                                                           if _end(end)[0] == name)]
    column = _Column(name, {}, [])
    for net in (source.networks[n] for n in wanted or list(source.networks)[:1]):
        part = _network_column(source, net, None)
        prefix = "" if single else f"{net.name}."
        for b in part.boxes.values():
            b.network, b.name = name, prefix + b.name
            b.kind = "input" if b.kind == "input" else "frozen" if b.kind != "plain" else "plain"
            b.tag = " · ".join(t for t in (f"imported from {name}", b.tag.split(" · ")[-1] if "params" in b.tag
                                           else "") if t)
            column.boxes[b.name] = b
        column.links += [Link(prefix + l.src, prefix + l.dst, l.kind, l.width, l.note, l.alpha) for l in part.links]
    return column


def _stub_column(checked: Checked, name: str) -> _Column:
    """Boxes for the bindings of import `name` that matching edges reference (when the
    imported spec itself is not at hand)."""
    stubs, where = {}, f"(in {os.path.basename(checked.imports[name])})"
    for e in checked.edges:
        for end, shape in ((e.source, e.source_shape), (e.target, e.target_shape)):
            net, b = _end(end)
            if net == name and b not in stubs:
                stubs[b] = Box(name, b, "frozen", "×".join(map(str, shape)), [where], f"imported from {name}")
    return _Column(name, stubs, [], [[]] + [[b] for b in stubs])


def _network_column(checked: Checked, net: CheckedNetwork, weights: dict | None) -> _Column:
    groups = defaultdict(list)
    for n in net.nodes:
        groups[n.binding].append(n)
    paths: dict[str, list[GatePath]] = defaultdict(list)
    for p in gate_paths(net):
        paths[p.gate.binding].append(p)
    boxes = {b: _box(checked, net, b, nodes, paths[b]) for b, nodes in groups.items()}
    return _Column(net.name, boxes, _links(net, groups, paths, weights))


def default_networks(checked: Checked) -> list[str]:
    """What a picture of a spec shows: the imports that matching edges reach (first: they are
    the sources), then every network of the spec."""
    aliases = dict.fromkeys(_end(end)[0] for e in checked.edges for end in (e.source, e.target))
    return [a for a in aliases if a in checked.imports and a not in checked.networks] + list(checked.networks)


def _end(ref: str) -> tuple[str, str]:
    """A matching edge's end as (column, box): `teacher.c3` -> ("teacher", "c3")."""
    r = BindingRef(ref)
    return r.network, r.binding


def _ports(n: int, centre: float, span: float) -> list[float]:
    step = min(16.0, span / max(n, 1))
    return [centre + (i - (n - 1) / 2) * step for i in range(n)]


def _arrow(x: float, y: float, dx: float, dy: float, size: float, colour: str) -> str:
    px, py, bx, by = -dy * size * 0.55, dx * size * 0.55, x - dx * size, y - dy * size
    return f'<path d="M{x:.1f},{y:.1f} L{bx + px:.1f},{by + py:.1f} L{bx - px:.1f},{by - py:.1f} z" fill="{colour}"/>'


def _draw_box(b: Box) -> list[str]:
    (fill, stroke), x0 = FILL[b.kind], b.x - b.w / 2
    dash = ' stroke-dasharray="5 3"' if b.kind == "frozen" else ""
    out = [f'<g class="box {b.kind}" data-network="{_x(b.network)}" data-binding="{_x(b.name)}">',
           f'<rect x="{x0:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="5" fill="{fill}" '
           f'stroke="{stroke}" stroke-width="1.3"{dash}/>']
    if b.shared:
        out.append(f'<rect x="{x0 + 3:.1f}" y="{b.y + 3:.1f}" width="{b.w - 6:.1f}" height="{b.h - 6:.1f}" rx="3" '
                   f'fill="none" stroke="{stroke}"/>')
    if b.kind == "frozen":  # a padlock in the top-right corner
        lx, ly = x0 + b.w - PAD - 9, b.y + PAD
        out.append(f'<path d="M{lx + 2:.1f},{ly + 5:.1f}v-2a2.5,2.5 0 0 1 5,0v2" fill="none" stroke="#666" '
                   f'stroke-width="1.4"/><rect x="{lx:.1f}" y="{ly + 5:.1f}" width="9" height="7" rx="1" fill="#666"/>')
    if b.gate:
        out.append(f'<rect x="{x0 + 6:.1f}" y="{b.y - 2.5:.1f}" width="{b.w - 12:.1f}" height="5" rx="2.5" '
                   f'fill="{GATE}"/>')
    y = b.y + PAD + 11
    out.append(f'<text x="{x0 + PAD:.1f}" y="{y:.1f}"><tspan font-weight="bold" font-size="12">{_x(b.name)}</tspan>'
               f'<tspan fill="#555" font-size="10" dx="8">{_x(b.shape)}</tspan></text>')
    for s in b.lines:
        y += LH
        out.append(f'<text x="{x0 + PAD:.1f}" y="{y:.1f}">{_x(s)}</text>')
    if b.tag:
        out.append(f'<text x="{x0 + PAD:.1f}" y="{y + LH - 1:.1f}" font-size="10" font-style="italic" '
                   f'fill="#555">{_x(b.tag)}</text>')
    return out + ["</g>"]


def _swatch(kind: str) -> str:
    if kind in ("data", "proxy_link", "match"):
        dash = ' stroke-dasharray="5 3"' if kind == "match" else ""
        return f'<line x1="0" y1="6" x2="24" y2="6" stroke="{LINK[kind.split("_")[0]]}" stroke-width="2"{dash}/>'
    if kind == "gate":
        return f'<rect y="3.5" width="24" height="5" rx="2.5" fill="{GATE}"/>'
    fill, stroke = FILL.get(kind, FILL["trainable"])
    dash, inner = ' stroke-dasharray="4 2"' if kind == "frozen" else "", ""
    if kind == "shared":
        inner = f'<rect x="2.5" y="2.5" width="19" height="7" fill="none" stroke="{stroke}"/>'
    return f'<rect width="24" height="12" rx="2" fill="{fill}" stroke="{stroke}"{dash}/>{inner}'


def _legend(used: set[str], y: float, width: float) -> tuple[list[str], float, float]:
    """The legend of the marks `used`, wrapped to `width`; returns it, its right edge and bottom."""
    items = [("input", "input"), ("trainable", "trainable"), ("frozen", "frozen"), ("plain", "no parameters"),
             ("proxy", "proxies only"), ("adapter", "adapter"), ("shared", "shared"), ("gate", "gate"),
             ("data", "data flow, main path"), ("proxy_link", "proxy path"), ("match", "matching edge")]
    out, x, right = [], 12.0, 12.0
    for kind, text in (item for item in items if item[0] in used):
        if x + 34 + len(text) * CW > max(width, 300) and x > 12:
            x, y = 12.0, y + 20
        out.append(f'<g transform="translate({x:.0f},{y:.0f})">{_swatch(kind)}'
                   f'<text x="30" y="10" font-size="10">{text}</text></g>')
        x += 40 + len(text) * CW
        right = max(right, x)
    return out, right, y + 14


def _match_style(checked: Checked, k: int, weights: dict | None) -> tuple[float, str]:
    """A matching edge's width (lambda over the largest lambda, when given) and label."""
    lams = [_finite(v) for v in (weights or {}).get("edges") or []]
    lam = lams[k] if k < len(lams) else None
    width = 0.6 + 4.4 * abs(lam) / max(max(abs(v or 0) for v in lams), 1e-12) if lam is not None else 1.3
    return width, checked.edges[k].weighting + (f" λ={lam:.2f}" if lam is not None else "")


def to_svg(checked: Checked, networks: list[str], weights: dict | None = None) -> str:
    """A standalone SVG of `networks` (a column each, side by side, rows aligned), with a legend."""
    if not networks:
        raise ValueError("no network to draw")
    cols = [_column(checked, n, weights) for n in networks]
    for c in cols:
        _arrange(c)
    rows = max(len(c.layers) for c in cols)
    row_h = [max([c.boxes[v].h for c in cols if r < len(c.layers) for v in c.layers[r] if v in c.boxes] or [12])
             for r in range(rows)]
    tops = [TOP + sum(row_h[:r]) + VGAP * r for r in range(rows)]
    bottom = tops[-1] + row_h[-1] + 12
    boxes = {(c.name, b.name): b for c in cols for b in c.boxes.values()}
    drawn = [k for k, e in enumerate(checked.edges)
             if _end(e.source) in boxes and _end(e.target) in boxes]
    left, frames, out = 12.0, [], []
    for c in cols:
        half = {v: (c.boxes[v].w if v in c.boxes else 4) / 2 for v in c.x}
        lo, hi = min((c.x[v] - half[v] for v in c.x), default=0), max((c.x[v] + half[v] for v in c.x), default=0)
        inner = max(hi - lo, len(c.name) * 9.0)
        c.x = {v: x + left + 14 + (inner - (hi - lo)) / 2 - lo for v, x in c.x.items()}
        for r, layer in enumerate(c.layers):
            for b in (c.boxes[v] for v in layer if v in c.boxes):
                b.x, b.y = c.x[b.name], tops[r] + (row_h[r] - b.h) / 2
        frames.append(f'<rect x="{left:.1f}" y="22" width="{inner + 28:.1f}" height="{bottom - 22:.1f}" rx="8" '
                      f'fill="#fafafa" stroke="#d0d0d0"/><text x="{left + 14 + inner / 2:.1f}" y="42" '
                      f'text-anchor="middle" font-size="14" font-weight="bold">{_x(c.name)}</text>')
        left += inner + 28 + (150 if drawn else 30)
        out += _svg_links(c, tops, row_h)
    arcs = any(_end(e.source)[0] == _end(e.target)[0] for e in (checked.edges[k] for k in drawn))
    out += _svg_matches(checked, drawn, boxes, [c.name for c in cols], weights)
    out += [s for b in boxes.values() for s in _draw_box(b)]
    legend, right, end = _legend(_marks(cols, boxes, bool(drawn)), bottom + 16, left)
    width, height = max(left - (150 if drawn else 30) + 12 + 80 * arcs, right), end + 12
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
            f'font-size="11"><rect width="100%" height="100%" fill="white"/>')
    return "\n".join([head, *frames, *out, *legend, "</svg>"]) + "\n"


def _marks(cols: list[_Column], boxes: dict, matches: bool) -> set[str]:
    """The kinds of box and line a picture uses (its legend lists those)."""
    used = {b.kind for b in boxes.values()} | {"proxy_link" if l.kind == "proxy" else "data"
                                                for c in cols for l in c.links}
    return used | {m for m, on in (("shared", any(b.shared for b in boxes.values())),
                                   ("gate", any(b.gate for b in boxes.values())), ("match", matches)) if on}


def _svg_links(c: _Column, tops: list[float], row_h: list[float]) -> list[str]:
    """Data-flow arrows from the bottom of the source to the top of the target, through dummies."""
    row = {v: r for r, layer in enumerate(c.layers) for v in layer}
    start, end = {}, {}
    after = [c.x[(ch or [l.dst])[0]] for l, ch in zip(c.links, c.routes)]  # x where a link heads
    before = [c.x[(ch or [l.src])[-1]] for l, ch in zip(c.links, c.routes)]  # x where it comes from
    for b in c.boxes.values():  # spread the ports along a side, in that order
        outs = sorted((k for k, l in enumerate(c.links) if l.src == b.name), key=after.__getitem__)
        ins = sorted((k for k, l in enumerate(c.links) if l.dst == b.name), key=before.__getitem__)
        start.update(zip(outs, _ports(len(outs), b.x, b.w * 0.8)))
        end.update(zip(ins, _ports(len(ins), b.x, b.w * 0.8)))
    out = []
    for k, (l, chain) in enumerate(zip(c.links, c.routes)):
        s, t, colour, size = c.boxes[l.src], c.boxes[l.dst], LINK[l.kind], 5 + 1.2 * l.width
        through = [(c.x[d], y) for d in chain for y in (tops[row[d]], tops[row[d]] + row_h[row[d]])]
        pts = [(start[k], s.y + s.h), *through, (end[k], t.y - (3 if t.gate else 0))]
        d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
        for i in range(0, len(pts) - 1, 2):  # curves between rows, straight through a dummy's row
            (x0, y0), (x1, y1) = pts[i], pts[i + 1]
            y1 -= size if i + 2 == len(pts) else 0
            d += f" C{x0:.1f},{(y0 + y1) / 2:.1f} {x1:.1f},{(y0 + y1) / 2:.1f} {x1:.1f},{y1:.1f}"
            d += f" L{pts[i + 2][0]:.1f},{pts[i + 2][1]:.1f}" if i + 2 < len(pts) else ""
        alpha = f' data-alpha="{l.alpha:.6g}"' if l.alpha is not None else ""
        out += [f'<path class="link {l.kind}" data-from="{_x(l.src)}" data-to="{_x(l.dst)}"{alpha} d="{d}" '
                f'fill="none" stroke="{colour}" stroke-width="{l.width:.2f}" stroke-opacity="0.9">'
                f'<title>{_x(l.note or f"{l.src} → {l.dst}")}</title></path>', _arrow(*pts[-1], 0, 1, size, colour)]
    return out


def _svg_matches(checked: Checked, drawn: list[int], boxes: dict, order: list[str], weights: dict | None) -> list[str]:
    """Matching edges: dashed, from side to side (an arc within a column), labelled near the target."""
    ends, sides, port, out = {}, defaultdict(list), {}, []
    for k in drawn:
        s, t = (boxes[_end(end)] for end in (checked.edges[k].source, checked.edges[k].target))
        ds = 1 if order.index(t.network) >= order.index(s.network) else -1
        dt = -ds if t.network != s.network else 1
        ends[k] = (s, ds, t, dt)
        sides[(s.network, s.name, ds)].append((t.y, k, 0))
        sides[(t.network, t.name, dt)].append((s.y, k, 1))
    for (net, name, _), items in sides.items():
        b = boxes[(net, name)]
        for (_, k, j), y in zip(sorted(items), _ports(len(items), b.y + b.h / 2, b.h * 0.8)):
            port[(k, j)] = y
    for k in drawn:
        (s, ds, t, dt), (width, label), e = ends[k], _match_style(checked, k, weights), checked.edges[k]
        x0, y0, x1, y1, size = s.x + ds * s.w / 2, port[(k, 0)], t.x + dt * t.w / 2, port[(k, 1)], 5 + width
        x1e = x1 + dt * size
        bend = max(40.0, abs(x1 - x0) / 2) if ds != dt else 60 + abs(y1 - y0) / 8
        c0, c1 = x0 + ds * bend, x1e + dt * bend
        lx, ly = 0.008 * x0 + 0.096 * c0 + 0.384 * c1 + 0.512 * x1e, 0.104 * y0 + 0.896 * y1 - 3  # t = 0.8
        text = f'x="{lx:.1f}" y="{ly:.1f}" font-size="9" text-anchor="middle"'
        out += [f'<path class="match" data-from="{_x(e.source)}" data-to="{_x(e.target)}" d="M{x0:.1f},{y0:.1f} '
                f'C{c0:.1f},{y0:.1f} {c1:.1f},{y1:.1f} {x1e:.1f},{y1:.1f}" fill="none" stroke="{LINK["match"]}" '
                f'stroke-width="{width:.2f}" stroke-dasharray="6 4" stroke-opacity="0.8">'
                f'<title>{_x(f"{e.source} → {e.target}: {label}")}</title></path>',
                _arrow(x1, y1, -dt, 0, size, LINK["match"]),
                f'<text {text} fill="white" stroke="white" stroke-width="3">{_x(label)}</text>',
                f'<text {text} fill="{LINK["match"]}">{_x(label)}</text>']
    return out


def to_dot(checked: Checked, networks: list[str], weights: dict | None = None) -> str:
    """Graphviz DOT text: a cluster per network, with the SVG's colours and marks."""
    cols = [_column(checked, n, weights) for n in networks]
    out = ["digraph assembler {", '  graph [rankdir=TB, fontname="Helvetica", nodesep=0.3, ranksep=0.45];',
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];', "  edge [arrowsize=0.7];"]
    for i, c in enumerate(cols):
        out.append(f'  subgraph "cluster_{i}" {{\n    label={_q(c.name)}; style="rounded"; color="#bbbbbb";')
        for b in c.boxes.values():
            (fill, stroke), dashed = FILL[b.kind], ",dashed" if b.kind == "frozen" else ""
            label = "\n".join([f"{b.name}  {b.shape}", *b.lines] + ([b.tag] if b.tag else []))
            extra = (", peripheries=2" if b.shared else "") + (f', color="{GATE}", penwidth=2' if b.gate else
                                                                f', color="{stroke}"')
            out.append(f'    {_q(c.name + "." + b.name)} [label={_q(label)}, style="rounded,filled{dashed}", '
                       f'fillcolor="{fill}"{extra}];')
        out.append("  }")
        for l in c.links:
            label = f", label={_q(f'α={l.alpha:.2f}')}" if l.alpha is not None else ""
            out.append(f'  {_q(c.name + "." + l.src)} -> {_q(c.name + "." + l.dst)} [color="{LINK[l.kind]}", '
                       f"penwidth={l.width:.2f}{label}, tooltip={_q(l.note or l.kind)}];")
    drawn = {f"{c.name}.{b}" for c in cols for b in c.boxes}
    for k, e in enumerate(checked.edges):
        if e.source in drawn and e.target in drawn:
            width, label = _match_style(checked, k, weights)
            out.append(f'  {_q(e.source)} -> {_q(e.target)} [style=dashed, color="{LINK["match"]}", '
                       f"penwidth={width:.2f}, label={_q(label)}, fontsize=8, constraint=false];")
    return "\n".join(out + ["}"]) + "\n"
