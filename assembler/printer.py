"""Syntax IR -> canonical text (`assembler fmt`). `parse(format(spec)) == spec` for every spec.

Canonical form: four-space indents, one statement per line (wrapped past 100 columns, later
lines indented 8 more: `wrap`), `a -> b` with single spaces,
`f(a, b=1)` with no space inside brackets, one blank line between top-level statements
(consecutive one-line `use`, `block`, `shared` and `match` statements stay together), and at
most one blank line kept where the source had some. Comments are kept: a comment on a
statement's last line trails it (after its last printed line), every other comment goes on its
own line before the statement it precedes.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from . import ir

INDENT = "    "


def format_spec(spec: ir.Spec) -> str:
    """The canonical text of a spec, comments included."""
    units = _units(spec)
    _attach_comments(units, spec.comments)
    occupied = {c.line for c in spec.comments}  # source lines that are not blank
    if spec.text is not None:  # only lines that are really empty count as blank (not removed statements)
        source = spec.text.split("\n")
        occupied |= {i + 1 for i, line in enumerate(source) if line.strip()}
    out: list[str] = []
    prev: _Unit | None = None
    for u in units:
        if prev is not None and _blank_between(prev, u, occupied):
            out.append("")
        for c in u.leading:
            out.append(u.indent + c)
        lines = [u.indent + u.text] if u.kind == "comment" else wrap(u.text, u.indent)  # a comment stays whole
        if u.trailing:
            lines[-1] += "  " + "  ".join(u.trailing)
        out.extend(lines)
        prev = u
    return "\n".join(out).rstrip("\n") + "\n" if out else ""


@dataclass
class _Unit:
    """One printed line: a statement, a container's header or its closing brace."""

    text: str
    indent: str
    start: int | None  # source lines this unit covers (None: built by hand or an edit)
    end: int | None
    top: bool  # a top-level statement or header
    kind: str
    leading: list[str] = field(default_factory=list)
    trailing: list[str] = field(default_factory=list)


def _lines(node) -> tuple[int | None, int | None]:
    span = getattr(node, "span", None)
    if span is None or not span.line:
        return None, None
    return span.line, span.end_line


def _units(spec: ir.Spec) -> list[_Unit]:
    units: list[_Unit] = []
    for item in spec.items:
        start, end = _lines(item)
        kind = type(item).__name__
        if isinstance(item, ir.Network) or isinstance(item, ir.Block) and item.body is not None \
                or isinstance(item, ir.Train):
            header = _header(item)
            body = item.settings if isinstance(item, ir.Train) else item.body
            first_body = next((s for s in body if _lines(s)[0] is not None), None)
            head_end = _brace_line(spec.text, start) if start is not None else None
            if first_body is not None and head_end is not None:
                head_end = min(head_end, _lines(first_body)[0])
            units.append(_Unit(header + " {", "", start, head_end, True, kind + ".open"))
            for stmt in body:
                s, e = _lines(stmt)
                units.append(_Unit(_statement(stmt), INDENT, s, e, False, type(stmt).__name__))
            units.append(_Unit("}", "", end, end, False, kind + ".close"))
        else:
            units.append(_Unit(_statement(item), "", start, end, True, kind))
    return units


def _brace_line(text: str | None, start: int) -> int:
    """The line of the `{` that opens the body of the container starting on line `start` (a
    header may span lines: a comment after its `{` trails it); `start` without the text."""
    if text is None:
        return start
    lines = text.split("\n")
    for number in range(start, len(lines) + 1):
        line, i = lines[number - 1], 0
        while i < len(line):
            ch = line[i]
            if ch == "#":
                break
            if ch == '"':
                i += 1
                while i < len(line) and line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
            elif ch == "{":
                return number
            i += 1
    return start


def _attach_comments(units: list[_Unit], comments) -> None:
    placed = [u for u in units if u.start is not None]
    for c in sorted(comments, key=lambda c: (c.line, c.column)):
        home = None
        for u in placed:
            if u.start <= c.line <= u.end:
                home = u
                break
        if home is not None:
            if c.line == home.end:  # after the statement's last token
                home.trailing.append(c.text)
            else:
                home.leading.append(c.text)
            continue
        nxt = next((u for u in placed if u.start > c.line), None)
        if nxt is None:
            units.append(_Unit(c.text, "", c.line, c.line, True, "comment"))
            placed.append(units[-1])
        elif nxt.kind.endswith(".close"):
            # a comment at the end of a body stays inside it
            idx = units.index(nxt)
            units.insert(idx, _Unit(c.text, INDENT, c.line, c.line, False, "comment"))
            placed.insert(placed.index(nxt), units[idx])
        else:
            nxt.leading.append(c.text)


def _blank_between(prev: _Unit, u: _Unit, comment_lines: set[int]) -> bool:
    if u.kind.endswith(".close"):
        return False
    if prev.kind.endswith(".open"):
        return False
    if prev.end is not None and u.start is not None:
        first = min([u.start] + [ln for ln in comment_lines if prev.end < ln < u.start])
        gap = [ln for ln in range(prev.end + 1, first) if ln not in comment_lines]
        if gap:
            return True
        if not (prev.top and u.top):
            return False
    if not u.top or not prev.top and not prev.kind.endswith(".close"):
        return False
    together = {"Use", "Match", "Shared", "Block", "comment"}
    return not (prev.kind == u.kind and u.kind in together) and not (
        prev.kind in ("Shared", "Block") and u.kind in ("Shared", "Block"))


# ---------------------------------------------------------------------------------------------
# Long lines

WIDTH = 100  # longer statements are wrapped (`wrap`)
CONTINUATION = 2 * INDENT  # a wrapped line's indent when nothing above it to align with


@dataclass(frozen=True)
class _Break:
    at: int  # index of the space that becomes a newline
    level: float  # bracket depth; +0.5 before `->` (an argument stays whole where a comma can break)
    anchor: int | None  # index of what the next line aligns with: an open bracket (the column after
    # it) or the space before an earlier `->` (its arrow); None: CONTINUATION


def wrap(text: str, indent: str, width: int | None = None) -> list[str]:
    """A statement's printed lines: one when it fits in `width` columns, else broken where a
    newline means nothing (after a comma inside brackets, and before `->`). The shallowest
    breaks that make every line fit are used; a line after a comma starts in the column after
    its open bracket, one starting with `->` under the first `->` of its chain (else
    CONTINUATION deeper than the statement). Where no choice fits, lines are as short as the
    breaks allow (`width`: WIDTH unless given)."""
    width = WIDTH if width is None else width
    if len(indent) + len(text) <= width:
        return [indent + text]
    points = _break_points(text)
    for level in sorted({p.level for p in points}):
        lines = _fill(text, [p for p in points if p.level <= level], indent, width)
        if all(len(line) <= width for line in lines):
            return lines
    return _fill(text, points, indent, width)


def _break_points(text: str) -> list[_Break]:
    out: list[_Break] = []
    opened: list[int] = []  # indices of the open brackets around the current position
    first_arrow: dict[int | None, int] = {}  # innermost open bracket (None: none) -> its chain's first `->`
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':  # skip a string, escapes included
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch in "([":
            opened.append(i)
        elif ch in ")]":
            first_arrow.pop(opened.pop() if opened else None, None)
        elif ch == "," and opened and text.startswith(" ", i + 1):
            first_arrow.pop(opened[-1], None)  # a new argument: a new chain
            out.append(_Break(i + 1, float(len(opened)), opened[-1]))
        elif ch == " " and text.startswith("->", i + 1):
            group = opened[-1] if opened else None
            anchor = first_arrow.setdefault(group, i)
            out.append(_Break(i, len(opened) + 0.5, None if anchor == i else anchor))
        i += 1
    return out


def _fill(text: str, breaks: list[_Break], indent: str, width: int) -> list[str]:
    """Greedy filling: each line ends at the last break that keeps it within `width` (or at the
    first break, when none does). Linear in the breaks (they come in text order)."""
    lines, start, prefix = [], 0, indent
    starts, prefixes = [0], [len(indent)]  # each printed line's first index in `text`, and its indent
    i, n = 0, len(breaks)
    while True:
        while i < n and breaks[i].at <= start:
            i += 1
        if len(prefix) + len(text) - start <= width or i == n:
            lines.append(prefix + text[start:])
            return lines
        limit, j = start + width - len(prefix), i  # a break at or before `limit` keeps the line within width
        while j + 1 < n and breaks[j + 1].at <= limit:
            j += 1
        b = breaks[j]
        lines.append(prefix + text[start:b.at])
        col = len(indent + CONTINUATION)
        if b.anchor is not None:
            line = bisect.bisect_right(starts, b.anchor) - 1
            aligned = prefixes[line] + b.anchor - starts[line] + 1
            col = aligned if aligned < width // 2 else col
        start, prefix = b.at + 1, " " * col
        starts.append(start)
        prefixes.append(col)


# ---------------------------------------------------------------------------------------------
# Statements


def _header(item) -> str:
    if isinstance(item, ir.Network):
        inputs = ", ".join(f"{i.name}: [{', '.join(map(str, i.shape))}]" for i in item.inputs)
        return f"network {item.name}({inputs})"
    if isinstance(item, ir.Block):
        return f"block {item.name}{_params(item)}"
    return f"train {', '.join(item.networks)}"


def _params(block: ir.Block) -> str:
    if not block.params and not block.has_parens:
        return ""
    parts = [p.name if p.default is None else f"{p.name}={format_expr(p.default)}" for p in block.params]
    return f"({', '.join(parts)})"


def _statement(node) -> str:
    if isinstance(node, ir.Use):
        return f"use {_string(node.path)} as {node.alias}"
    if isinstance(node, ir.Block):
        return f"block {node.name}{_params(node)} = {format_expr(node.pipe)}"
    if isinstance(node, ir.Shared):
        return f"{'frozen ' if node.frozen else ''}shared {node.name} = {format_expr(node.pipe)}"
    if isinstance(node, ir.Binding):
        return f"{node.modifier + ' ' if node.modifier else ''}{node.name} = {format_expr(node.chain)}"
    if isinstance(node, ir.Skips):
        args = f" ({', '.join(_arg(a) for a in node.args)})" if node.args else ""
        return f"skips {', '.join(node.nodes)}{args}"
    if isinstance(node, ir.Return):
        return f"return {', '.join(node.names)}"
    if isinstance(node, ir.Match):
        if node.product is not None:
            left, right = node.product
            pairs = f"[{', '.join(r.dotted for r in left)}] * [{', '.join(r.dotted for r in right)}]"
        else:
            pairs = ", ".join(f"{p.source.dotted} -> {p.target.dotted}" for p in node.pairs)
        return f"match {pairs} : {format_expr(node.weighting)}"
    if isinstance(node, ir.Setting):
        return f"{node.key} = {format_expr(node.value)}"
    raise TypeError(f"cannot print {type(node).__name__}")


# ---------------------------------------------------------------------------------------------
# Expressions


def format_expr(e) -> str:
    """The canonical text of an expression, chain or pipe."""
    if isinstance(e, ir.Chain):
        parts = [] if e.source is None else [format_expr(e.source)]  # (a -> b) -> c reads as a -> b -> c
        parts += [_element(x) for x in e.elements]
        return " -> ".join(parts)
    if isinstance(e, ir.Number):
        return e.text if e.text is not None else _number(e.value)
    if isinstance(e, ir.String):
        return _string(e.value)
    if isinstance(e, ir.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ir.ListValue):
        return "[" + ", ".join(format_expr(x) for x in e.items) + "]"
    if isinstance(e, (ir.Ref, ir.Range)):
        return e.dotted
    if isinstance(e, ir.In):
        return "in"
    if isinstance(e, ir.Call):
        return f"{e.ref.dotted}({', '.join(_arg(a) for a in e.args)})"
    if isinstance(e, ir.Element):
        return _element(e)
    raise TypeError(f"cannot print {type(e).__name__}")


def _element(el: ir.Element) -> str:
    return f"{el.modifier + ' ' if el.modifier else ''}{format_expr(el.target)}"


def _arg(a: ir.Arg) -> str:
    return f"{a.name}={format_expr(a.value)}" if a.name else format_expr(a.value)


def _number(v) -> str:
    if isinstance(v, bool):
        raise TypeError("a bool is not a number")
    if isinstance(v, int):
        return str(v)
    text = repr(float(v))
    return text if re.search(r"[.eEn]", text) else text + ".0"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
