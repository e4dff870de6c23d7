"""One generic visitor of the syntax IR, and the few questions the passes ask with it.

`walk` yields a node and everything inside it; `rewrite` rebuilds a node bottom-up through a
function. Both take a `children` function that says which fields to enter: every IR field
(`fields`, the default), or only the places where a chain reads its inputs (`sources`: a
chain's source and the paths of a merge), which is what rewiring an edge is about.
"""

from __future__ import annotations

import functools
import typing
from typing import Callable, Iterator

from . import ir
from .ops import merges

Children = Callable[[ir.Node], list[tuple[str, object]]]


def _holds_nodes(annotation) -> bool:
    """Whether a field's type can hold IR nodes."""
    if isinstance(annotation, type):
        return issubclass(annotation, ir.Node)
    return any(_holds_nodes(a) for a in typing.get_args(annotation))


@functools.lru_cache(maxsize=None)
def _child_fields(cls) -> tuple[str, ...]:
    """The fields of an IR class that can hold nodes, in declaration order."""
    return tuple(name for name, f in cls.model_fields.items() if name != "span" and _holds_nodes(f.annotation))


def fields(node: ir.Node) -> list[tuple[str, object]]:
    """Every field of `node` that holds IR nodes (a node or a tuple of them), with its name."""
    out = []
    for name in _child_fields(type(node)):
        value = getattr(node, name)
        if value is not None and value != ():
            out.append((name, value))
    return out


def sources(node: ir.Node) -> list[tuple[str, object]]:
    """The fields where values flow in: a chain's source, a merge's positional paths."""
    if isinstance(node, ir.Chain):
        return [("source", node.source)] if node.source is not None else []
    if isinstance(node, ir.Call) and len(node.ref.parts) == 1 and node.ref.parts[0] in merges():
        return [("args", node.args)]
    if isinstance(node, ir.Arg) and node.name is None:
        return [("value", node.value)]
    return []


def walk(node, children: Children | None = None) -> Iterator[ir.Node]:
    """`node` and every node inside it, parents before children, in field order (source
    order for parsed specs); with `children` (e.g. `sources`), only the fields it names.
    Iterative: deep nesting costs no stack."""
    stack = [node]
    pop, push, append, table = stack.pop, stack.extend, stack.append, _CHILDREN
    while stack:
        n = pop()
        kind = type(n)
        if kind is tuple:
            push(reversed(n))
            continue
        names = table.get(kind)
        if names is None:
            if not isinstance(n, ir.Node):
                continue
            names = table[kind] = _child_fields(kind)
        yield n
        if children is not None:
            push(reversed([value for _, value in children(n)]))
            continue
        for name in reversed(names):
            value = getattr(n, name)
            if value is not None:
                append(value)


_CHILDREN: dict[type, tuple[str, ...]] = {}


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


def uses(item) -> tuple[set[str], set[str]]:
    """(element names, reference heads) of a network, template or shared module in one walk:
    the single names used as elements (ops, templates, shared modules) and the first parts of
    its dotted references (the networks and imports it reads from)."""
    names, heads = set(), set()
    for n in walk(item):
        if isinstance(n, ir.Element):
            ref = n.target.ref if isinstance(n.target, ir.Call) else n.target
            if isinstance(ref, ir.Ref) and len(ref.parts) == 1:
                names.add(ref.parts[0])
        elif isinstance(n, ir.Ref) and len(n.parts) > 1:
            heads.add(n.parts[0])
    return names, heads


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
