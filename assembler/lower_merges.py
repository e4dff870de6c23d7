"""Lowering merges: `add(a, b)`, `mul`, `cat(..., dim=)`, `gate(..., init=, mix=)` and the
merges packages register. Every path is lowered (each path's errors are reported), the
options are bound and checked through the merge table, which gives the shape and the counts;
a merge with a module (a gate) declares it; a gate that mixes with a ReLU takes over each
path's own final ReLU (`_absorb_relus`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ir
from .errors import did_you_mean
from .ops import OpError, merges, ops
from .printer import format_expr
from .scope import Fail, fail

if TYPE_CHECKING:
    from .lower import Ctx, Lowerer


def merge(lw: "Lowerer", call: ir.Call, ctx: "Ctx") -> str:
    """A merge call: its paths lowered, its options bound and checked, its shape and counts
    from the merge table, its module declared (a gate's), a ReLU-mixing gate's ReLUs absorbed."""
    merge = merges()[call.ref.parts[0]]
    paths = [a for a in call.args if a.name is None]
    kwargs = {a.name: a for a in call.args if a.name is not None}
    try:
        args = merge.bind([], {k: lw.value(a.value, ctx) for k, a in kwargs.items()})
    except OpError as e:
        raise fail(str(e), kwargs[e.arg].span if e.arg in kwargs else call.span, hint=e.hint) from None
    if len(paths) < 2:
        raise fail(f"'{merge.name}' merges two or more chains, got {len(paths)}", call.span)
    inputs = _merge_paths(lw, merge.name, paths, ctx)
    shapes = [lw.shape(n) for n in inputs]
    try:
        if merge.complete is not None:
            args = merge.complete(args, len(paths))
        shape = merge.infer(shapes, args)
        params, flops = merge.count(shapes, args, shape)
    except OpError as e:
        span = paths[e.path].span if e.path is not None else kwargs[e.arg].span if e.arg in kwargs else None
        raise fail(str(e), span or call.span, hint=e.hint) from None
    module, trainable = None, False
    if merge.module:
        trainable = ctx.modifier != "frozen"
        module = lw.declare(f"{ctx.path}.{merge.name}", merge.name, args, shape, trainable,
                            merge.role or "merge", params, call.span)
    node_args = args
    if merge.role == "gate" and args.get("mix") == "relu":
        inputs, absorbed = _absorb_relus(lw, inputs, ctx)
        node_args = {**args, "absorbed": absorbed}
    return lw.add(ctx, merge.name, tuple(inputs), shape, args=node_args, module=module, trainable=trainable,
                  role=merge.role or "merge", params=params, flops=flops, span=call.span)


def _absorb_relus(lw: "Lowerer", inputs: list[str], ctx: "Ctx") -> tuple[list[str], list[int]]:
    """A `gate(..., mix="relu")` applies the ReLU after mixing, so each path's own final ReLU
    moves there (as in NetTailor's code, whose blocks end before their last ReLU): a path
    whose last op is `relu`, or `relu` followed only by `maxpool`s (a max commutes with the
    ReLU), loses that `relu`. Only nodes of this binding's own paths move (a bare name's
    value is another binding's). Returns the gate's inputs and the indices of the paths
    that lost a ReLU (`edits.prune` gives them back their ReLU when a gate collapses)."""
    out, absorbed = [], []
    for i, last in enumerate(inputs):
        node, after = last, []
        while lw.nodes[node]["binding"] == ctx.binding and lw.nodes[node]["op"] == "maxpool":
            after.append(node)
            node = lw.nodes[node]["inputs"][0]
        relu = lw.nodes[node]
        readers = [n for n in _own_nodes(lw, ctx.binding) if node in n["inputs"]]
        if relu["binding"] != ctx.binding or relu["op"] != "relu" or len(readers) > (1 if after else 0):
            out.append(last)  # no relu of its own, or one that something else reads too
            continue
        source = relu["inputs"][0]
        if after:  # the first max-pool now reads what the relu read
            lw.nodes[after[-1]]["inputs"] = (source,)
        del lw.nodes[node]
        lw.read.discard(node)
        out.append(last if after else source)
        absorbed.append(i)
    return out, absorbed


def _own_nodes(lw: "Lowerer", binding: str):
    """The nodes lowered so far for `binding` (the last ones: a binding lowers in one go)."""
    for n in reversed(lw.nodes.values()):
        if n["binding"] != binding:
            return
        yield n


def _merge_paths(lw: "Lowerer", op: str, paths: list[ir.Arg], ctx: "Ctx") -> list[str]:
    """Lower every path of a merge (all of them, so that each path's errors are reported)."""
    inputs, errors = [], []
    for i, a in enumerate(paths):
        role = "proxy" if merges()[op].role == "gate" and i > 0 and ctx.role == "layer" else ctx.role
        try:
            value = a.value if isinstance(a.value, ir.Chain) else ir.Chain.model_construct(source=a.value,
                                                                                          span=a.span)
            inputs.append(lw.chain(value, ctx.but(path=f"{ctx.path}.in{i}", role=role)))
        except Fail as f:
            errors.extend(f.diags)
    if errors or len(inputs) < len(paths):
        raise Fail(*errors)
    return inputs


def not_a_merge(lw: "Lowerer", src: ir.Call) -> Fail:
    """`f(a, b)` at the start of a chain where `f` is no merge: say what it is instead."""
    name = src.ref.dotted
    merge_names = ", ".join(merges())
    close = did_you_mean(name, list(merges()))
    if close:
        hint = f"{close} the merges are {merge_names}"
    elif name in ops() or name in lw.scope.blocks or name in lw.scope.shared:
        values = [a.value for a in src.args if a.name is None]
        hint = (f"apply it to a value: {format_expr(values[0])} -> {name}" if len(src.args) == 1 and values
                else f"apply it to a value: x -> {name}(...)")
    else:
        hint = did_you_mean(name, list(ops()) + list(lw.scope.blocks)) or f"the merges are {merge_names}"
    return fail(f"'{name}(...)' is not a merge; a chain starts with an input, a binding or "
                f"{'/'.join(merges())}(...)", src.span, hint=hint)
