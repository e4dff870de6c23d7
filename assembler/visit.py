"""One generic visitor of the syntax IR, and the few questions the passes ask with it.

`walk` yields a node and everything inside it; `rewrite` rebuilds a node bottom-up through a
function. Both take a `children` function that says which fields to enter: every IR field
(`fields`, the default), or only the places where a chain reads its inputs (`sources`: a
chain's source and the paths of a merge), which is what rewiring an edge is about.
"""

from __future__ import annotations

from typing import Callable, Iterator

from . import ir
from .ops import merges

Children = Callable[[ir.Node], Iterator[tuple[str, object]]]


def fields(node: ir.Node) -> Iterator[tuple[str, object]]:
    """Every field of `node` that holds IR nodes (a node or a tuple of them)."""
    for name in type(node).model_fields:
        value = getattr(node, name)
        if isinstance(value, ir.Node) or isinstance(value, tuple) and value and isinstance(value[0], (ir.Node, tuple)):
            yield name, value


def sources(node: ir.Node) -> Iterator[tuple[str, object]]:
    """The fields where values flow in: a chain's source, a merge's positional paths."""
    if isinstance(node, ir.Chain):
        if node.source is not None:
            yield "source", node.source
    elif isinstance(node, ir.Call) and len(node.ref.parts) == 1 and node.ref.parts[0] in merges():
        yield "args", node.args
    elif isinstance(node, ir.Arg) and node.name is None:
        yield "value", node.value


def _nodes(value) -> Iterator[ir.Node]:
    if isinstance(value, ir.Node):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _nodes(v)


def walk(node, children: Children = fields) -> Iterator[ir.Node]:
    """`node` and every node inside it that `children` leads to, parents before children, in
    field order (source order for parsed specs). Iterative: deep nesting costs no stack."""
    stack = list(_nodes(node))[::-1]
    while stack:
        n = stack.pop()
        yield n
        inner = [c for _, value in children(n) for c in _nodes(value)]
        stack.extend(reversed(inner))


def rewrite(node, fn: Callable[[ir.Node], ir.Node], children: Children = fields):
    """`node` rebuilt bottom-up: each node that `children` leads to is replaced by `fn` of it
    (with its children already rewritten). Nodes that do not change are kept as they are."""
    if isinstance(node, tuple):
        new = tuple(rewrite(n, fn, children) for n in node)
        return node if all(a is b for a, b in zip(new, node)) else new
    if not isinstance(node, ir.Node):
        return node
    update = {}
    for name, value in children(node):
        new = rewrite(value, fn, children)
        if new is not value:
            update[name] = new
    if update:
        node = node.model_copy(update=update)
    return fn(node)


# ---------------------------------------------------------------------------------------------
# Questions the passes ask


def reads(expr) -> list[str]:
    """The names a chain reads where values flow in (its source, its merges' paths), in
    order, repeats included."""
    return [n.parts[0] for n in walk(expr, sources) if isinstance(n, ir.Ref) and len(n.parts) == 1]


def distinct_reads(expr, with_in: bool = False) -> tuple[str, ...]:
    """The distinct names a chain reads, in order of first appearance (and "in", a template's
    input, when `with_in`)."""
    out: dict[str, None] = {}
    for n in walk(expr, sources):
        if isinstance(n, ir.Ref) and len(n.parts) == 1:
            out.setdefault(n.parts[0])
        elif with_in and isinstance(n, ir.In):
            out.setdefault("in")
    return tuple(out)


def rename_reads(expr, old: str, new):
    """`expr` with every read of `old` (where values flow in) replaced by `new`: a name, or an
    expression to read instead."""
    def swap(n):
        if isinstance(n, ir.Ref) and n.parts == (old,):
            return ir.Ref(parts=(new,), span=n.span) if isinstance(new, str) else new
        return n
    return rewrite(expr, swap, sources)


def element_names(item) -> set[str]:
    """The single names used as elements (ops, templates, shared modules) in a network,
    template or shared module."""
    out = set()
    for n in walk(item):
        if isinstance(n, ir.Element):
            ref = n.target.ref if isinstance(n.target, ir.Call) else n.target
            if isinstance(ref, ir.Ref) and len(ref.parts) == 1:
                out.add(ref.parts[0])
    return out


def references(item) -> Iterator[ir.Ref]:
    """Every dotted reference in an item (`teacher.c2`, `pre.cnn.c1`, a range's start)."""
    return (n for n in walk(item) if isinstance(n, ir.Ref) and len(n.parts) > 1)
