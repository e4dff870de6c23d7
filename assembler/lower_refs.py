"""Lowering references to other networks' bindings, ranges and `copy(...)`.

A reference is spliced, not called (decision 18 of the reference): the owner's nodes for that
binding are copied into the using network, reading the element's input, with the owner's
modules (imported ones declared frozen under the import's alias; a copy's declared anew
under the element's path, initialised from the source).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import ir
from .errors import did_you_mean
from .graph import CheckedNetwork, GraphNode
from .keys import Key
from .scope import Fail, fail

if TYPE_CHECKING:
    from .lower import Ctx, Lowerer


def _owner(lw: "Lowerer", ref: ir.Ref) -> tuple[CheckedNetwork, list[str], Callable[[str], str], bool]:
    """The network a dotted reference points into, the remaining parts, the key mapper and
    whether it is imported."""
    head, scope = ref.parts[0], lw.scope
    if head in scope.failed:
        raise Fail()
    if head in scope.imports:
        imp = scope.imports[head]
        rest = list(ref.parts[1:])
        if len(rest) == 1 and rest[0] in imp.networks and rest[0] not in imp.networks[rest[0]].bindings:
            raise fail(f"'{ref.dotted}' names a network, not a binding", ref.span, hint=f"write {ref.dotted}.BINDING")
        if rest and rest[0] in imp.networks and (len(rest) > 1 or not imp.single):
            return imp.networks[rest[0]], rest[1:], imp.key, True
        if imp.single:
            return imp.networks[imp.single], rest, imp.key, True
        raise fail(f"'{ref.dotted}' names no network of '{head}'", ref.span,
                   hint=did_you_mean(rest[0] if rest else "", imp.networks) or
                   f"'{head}' holds the networks {', '.join(imp.networks)}: write {head}.NETWORK.BINDING")
    if head in scope.networks:
        if len(ref.parts) == 1:
            raise fail(f"'{head}' names a network, not a binding", ref.span, hint=f"write {head}.BINDING")
        return scope.networks[head], list(ref.parts[1:]), lambda k: k, False
    if head == lw.net.name:
        raise fail(f"'{ref.dotted}' refers to this network itself", ref.span,
                   hint="read a binding of this network at the start of a chain instead")
    choices = list(scope.imports) + list(scope.networks)
    raise fail(f"unknown network or import '{head}' in '{ref.dotted}'", ref.span,
               hint=did_you_mean(head, choices) or "import a spec with: use \"file.net\" as NAME")


def _binding_nodes(owner: CheckedNetwork, name: str, ref) -> list[GraphNode]:
    if name in owner.failed:
        raise Fail()
    if name not in owner.bindings or name in owner.inputs:
        if name in owner.inputs:
            raise fail(f"'{ref.dotted}' is an input of '{owner.name}', not a block", ref.span)
        raise fail(f"network '{owner.name}' has no binding '{name}'", ref.span, hint=did_you_mean(name, owner.bindings))
    nodes = owner.nodes_of(name)
    if not nodes:
        raise fail(f"'{ref.dotted}' computes nothing of its own", ref.span)
    return nodes


def reference(lw: "Lowerer", t, cur: str, ctx: "Ctx", el: ir.Element, copy_path: str | None = None) -> str:
    """`net.b` or a range `net.a..c` applied to node `cur` (with `copy_path`: a private copy)."""
    ref = t.start if isinstance(t, ir.Range) else t
    owner, rest, mapkey, imported = _owner(lw, ref)
    if len(rest) != 1:
        raise fail(f"'{t.dotted}' must name one binding of a network", t.span,
                   hint="write NET.BINDING, or ALIAS.BINDING for a file with one network")
    names = [rest[0]] if not isinstance(t, ir.Range) else _range(owner, rest[0], t.end, t)
    if imported and ctx.modifier == "trainable" and copy_path is None:
        raise fail(f"'{t.dotted}' is an imported block, shared by every network that uses it, and cannot be "
                   "trainable", el.span, hint=f"train a private copy instead: copy({t.dotted})")
    out = cur
    for name in names:
        out = _splice(lw, owner, name, out, ctx, ref, mapkey, imported, copy_path, ranged=len(names) > 1)
    return out


def _range(owner: CheckedNetwork, start: str, end: str, t: ir.Range) -> list[str]:
    """The bindings from `start` to `end` when they form a straight path."""
    for name in (start, end):
        _binding_nodes(owner, name, t)
    if start == end:
        return [start]
    import networkx as nx  # (ranges are rare: loaded when one is used)
    g = owner.binding_graph()
    paths = list(nx.all_simple_paths(g, start, end)) if start in g and end in g else []
    if not paths:
        raise fail(f"'{t.dotted}' is not a path: '{end}' does not read '{start}'", t.span)
    if len(paths) > 1:
        raise fail(f"'{t.dotted}' is not a straight path: '{end}' is reached from '{start}' in {len(paths)} ways",
                   t.span, hint="a range composes bindings that each read only the one before")
    path = paths[0]
    for prev, name in zip(path, path[1:]):
        reads = set(g.predecessors(name))
        if reads != {prev}:
            other = sorted(reads - {prev})
            raise fail(f"'{t.dotted}' is not a straight path: '{name}' also reads {', '.join(other)}", t.span,
                       hint="a range composes bindings that each read only the one before")
    return path


def _strip(key: str, prefix: str) -> str:
    """`key` without a leading `prefix.` (unchanged when it does not start so)."""
    return Key(key).below(prefix) or key


def _copy_suffix(lw: "Lowerer", owner: CheckedNetwork, name: str, key: str, ref: ir.Ref, imported: bool,
                 ranged: bool) -> str:
    """Where a copied module goes under the copy's path: its path inside the binding (one
    reference) or inside the network (a range, so the bindings stay apart); decision 11."""
    if imported:
        suffix = _strip(key, ref.parts[0])
        if lw.scope.imports[ref.parts[0]].single is None:
            suffix = _strip(suffix, owner.name)
    else:
        suffix = _strip(key, owner.name)
    return suffix if ranged else _strip(suffix, name)


def _splice(lw: "Lowerer", owner, name, cur, ctx, ref, mapkey, imported, copy_path, ranged) -> str:
    nodes = _binding_nodes(owner, name, ref)
    mine = {n.name for n in nodes}
    outside = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in mine))
    if len(outside) != 1:
        raise fail(f"'{owner.name}.{name}' reads {len(outside)} values ({', '.join(outside)}); as an element it "
                   "takes exactly one input", ref.span)
    if lw.shape(cur) != owner.node(outside[0]).shape:
        raise fail(f"'{ref.dotted}' expects an input of shape {list(owner.node(outside[0]).shape)}, got "
                   f"{list(lw.shape(cur))}", ref.span)
    rename = {outside[0]: cur}
    last = cur
    for n in nodes:
        key = mapkey(n.module) if n.module else None
        trainable = n.trainable and not imported
        role = "imported" if imported else ("reference" if n.role == "layer" else n.role)
        if key and imported and lw.module(key) is None:
            src = lw.scope.imports[ref.parts[0]].modules[n.module]
            lw.modules[key] = src.model_copy(update={"key": key, "trainable": False, "role": "imported",
                                                     "imported_from": ref.parts[0], "init_from": None,
                                                     "origin": n.module})
        if copy_path is not None and key:
            src = lw.module(key)
            trainable = lw.trainable(ctx)
            key = lw.declare(f"{copy_path}.{_copy_suffix(lw, owner, name, key, ref, imported, ranged)}", src.op,
                             src.args, src.in_shape, trainable, "copy", src.params, ref.span, init_from=key)
            role = "copy"
        elif ctx.modifier and key:
            trainable = lw.trainable(ctx, trainable)
        new = lw.add(ctx, n.op, tuple(rename.get(i, i) for i in n.inputs), n.shape, args=n.args,
                     module=key, trainable=trainable, role=role, params=n.params, flops=n.flops, span=ref.span)
        rename[n.name] = new
        last = new
    return last


def copy(lw: "Lowerer", t, cur: str, ctx: "Ctx", el: ir.Element) -> str:
    """`copy(net.b)` or `copy(net.a..c)`: private modules initialised from the source's."""
    if not isinstance(t, ir.Call) or len(t.args) != 1 or t.args[0].name is not None or \
            not isinstance(t.args[0].value, (ir.Ref, ir.Range)) or \
            isinstance(t.args[0].value, ir.Ref) and len(t.args[0].value.parts) < 2:
        raise fail("copy takes one reference to another network's binding: copy(pre.c1)", t.span)
    return reference(lw, t.args[0].value, cur, ctx, el, copy_path=ctx.path)
