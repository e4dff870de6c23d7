"""The torch side of the op table: one lowering per op or merge name.

A lowering says how a node of the checked IR becomes torch: `module(in_shape, args)` builds
the `nn.Module` of an op that has parameters or state (declared in `Checked.modules`), or
`function(node, inputs)` gives the callable of a `call_function` node with its arguments
(`inputs` are the fx nodes the node reads); a `passthrough` op (identity) emits no node.

To add an op: its front-end entry in the op table (`assembler.ops.register_op`, torch-free)
and one `register_lowering(name, ...)` here or in your package. The compiler
(`compiler.build_graph`) emits every node through this table.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph import GraphNode, Module
from .modules import Gate, Proxy, freeze


@dataclass(frozen=True)
class Lowering:
    """How one op becomes torch (exactly one of `module`, `function`, `passthrough`)."""

    module: Callable[[tuple, dict], nn.Module] | None = None
    function: Callable[[GraphNode, tuple], tuple[Any, tuple, dict]] | None = None
    passthrough: bool = False


LOWERINGS: dict[str, Lowering] = {}


def register_lowering(name: str, *, module: Callable[[tuple, dict], nn.Module] | None = None,
                      function: Callable[[GraphNode, tuple], tuple[Any, tuple, dict]] | None = None,
                      passthrough: bool = False) -> Lowering:
    """Attach the torch side to the op or merge `name` (registering again replaces it)."""
    if (module is not None) + (function is not None) + passthrough != 1:
        raise ValueError("a lowering is a module builder, a function or a passthrough (exactly one)")
    LOWERINGS[name] = Lowering(module, function, passthrough)
    return LOWERINGS[name]


def lowering(op: str) -> Lowering:
    if op not in LOWERINGS:
        raise KeyError(f"op '{op}' has no lowering; register one with assembler.lowerings.register_lowering")
    return LOWERINGS[op]


def build(decl: Module) -> nn.Module:
    """The module of a declared module (frozen unless it is trainable)."""
    make = lowering(decl.op).module
    if make is None:
        raise KeyError(f"op '{decl.op}' is lowered to a function, but a module was declared for it")
    m = make(decl.in_shape, decl.args)
    return m if decl.trainable else freeze(m)


def emit(g: fx.Graph, node: GraphNode, inputs: tuple) -> fx.Node:
    """The fx node (or the input it passes through) of a node without a module."""
    low = lowering(node.op)
    if low.passthrough:
        return inputs[0]
    if low.function is None:
        raise KeyError(f"op '{node.op}' is lowered to a module, but node '{node.name}' has none")
    fn, args, kwargs = low.function(node, inputs)
    return g.create_node("call_function", fn, args, kwargs, name=node.name)


# ---------------------------------------------------------------------------------------------
# The built-in ops and merges


def gap(x: torch.Tensor) -> torch.Tensor:
    """Global average pool over H and W, flattened to [N, C]."""
    return x.mean(dim=(-2, -1))


def add(*xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def mul(*xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def _dim(d: int) -> int:
    """A dimension counted without the batch, as torch counts it (with the batch)."""
    return d + 1 if d >= 0 else d


def _call(fn, *extra, **kwargs):
    """A lowering that calls `fn(inputs..., *extra, **kwargs)`."""
    return lambda node, xs: (fn, tuple(xs) + extra, kwargs)


def _pool(fn):
    return lambda n, xs: (fn, (xs[0], n.args["k"], n.args["stride"] or n.args["k"], n.args["pad"]), {})


for _name, _fn in [("relu", torch.relu), ("gelu", F.gelu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                   ("gap", gap)]:
    register_lowering(_name, function=_call(_fn))
register_lowering("identity", passthrough=True)
register_lowering("flatten", function=_call(torch.flatten, 1))
register_lowering("softmax", function=lambda n, xs: (torch.softmax, tuple(xs), {"dim": _dim(n.args["dim"])}))
register_lowering("maxpool", function=_pool(F.max_pool2d))
register_lowering("avgpool", function=_pool(F.avg_pool2d))
register_lowering("upsample", function=lambda n, xs: (F.interpolate, tuple(xs), {
    "scale_factor": float(n.args["scale"]), "mode": n.args["mode"]}))
register_lowering("conv", module=lambda s, a: nn.Conv2d(s[0], a["out"], a["k"], a["stride"], a["pad"],
                                                        groups=a["groups"], bias=a["bias"]))
register_lowering("linear", module=lambda s, a: nn.Linear(s[-1], a["out"], bias=a["bias"]))
register_lowering("batchnorm", module=lambda s, a: nn.BatchNorm2d(s[0]) if len(s) == 3 else nn.BatchNorm1d(s[0]))
register_lowering("layernorm", module=lambda s, a: nn.LayerNorm(s[-1]))
register_lowering("dropout", module=lambda s, a: nn.Dropout(a["p"]))
register_lowering("proxy", module=lambda s, a: Proxy(s[0], a["c"], a["stride"]))
register_lowering("add", function=lambda n, xs: (operator.add if len(xs) == 2 else add, tuple(xs), {}))
register_lowering("mul", function=lambda n, xs: (operator.mul if len(xs) == 2 else mul, tuple(xs), {}))
register_lowering("cat", function=lambda n, xs: (torch.cat, (list(xs), _dim(n.args["dim"])), {}))
register_lowering("gate", module=lambda s, a: Gate(len(a["init"]), a["init"], a.get("mix", "sum")))


def register_builder(op: str, build) -> None:
    """Give an op its module constructor (kept for packages written against it; new code calls
    `register_lowering(op, module=build)`)."""
    register_lowering(op, module=build)
