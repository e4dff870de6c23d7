"""PyTorch module -> a graph of the language's ops (`Traced`), by torch.fx symbolic tracing.

Every leaf module and every function call of the traced forward maps to one op of the table
(`assembler.ops`) with its arguments, or is an alias (identity, `contiguous`), or computes only
a shape for a `view`/`reshape` that flattens. Anything else is an `UnsupportedError` naming the
module path, its type and the supported list. Shapes come from running the traced graph once
(`ShapeProp`) on random inputs in eval mode; they decide what a `view` or an adaptive pool
means.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .op_map import (ALIAS_METHODS, FUNCTIONS, METHOD_DEFAULTS, METHODS, MODULES, SHAPE_METHODS, VIEWS, Shape,
                     UnsupportedError, adaptive, supported)


@dataclass
class Step:
    """One op application of the imported network."""

    name: str  # unique: the fx node's name
    op: str  # an op of the table or a merge (add, mul, cat)
    args: dict[str, Any]  # the op's arguments that differ from its defaults, by name
    inputs: tuple[str, ...]  # step or input names
    shape: Shape  # output shape without the batch
    module: str | None = None  # torch module path holding its state (conv, batchnorm, ...)
    scope: tuple[tuple[str, type], ...] = ()  # enclosing modules (outermost first), not the leaf
    in_shape: Shape = ()  # the (first) input's shape without the batch


@dataclass
class Traced:
    model: nn.Module
    inputs: dict[str, Shape]
    steps: list[Step]  # in a topological order
    outputs: list[str]
    types: dict[str, type] = field(default_factory=dict)  # module path -> type, for every module

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


# ---------------------------------------------------------------------------------------------
# Entry point


def trace(model: nn.Module, inputs: dict[str, Shape]) -> Traced:
    """Trace `model` (put in eval mode) and map it to ops; raises UnsupportedError."""
    model.eval()
    tracer = fx.Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # torch.fx raises many types for untraceable code
        where = next(reversed(tracer.module_stack), "") if getattr(tracer, "module_stack", None) else ""
        raise UnsupportedError(
            f"torch.fx cannot trace {_where(where, model)}: {type(e).__name__}: {e}",
            hint="the forward must be traceable by torch.fx: no Python control flow on tensor values, "
                 "no data-dependent shapes") from None
    gm = fx.GraphModule(model, graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        raise UnsupportedError(f"the forward of {type(model).__name__} takes {len(placeholders)} tensor(s) "
                               f"({', '.join(p.name for p in placeholders)}) but {len(inputs)} input shape(s) "
                               "were given", hint="give one --input NAME=C,H,W per argument of forward, in order")
    example = tuple(torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)) for shape in inputs.values())
    with torch.no_grad():
        ShapeProp(gm).propagate(*example)
    mapper = _Mapper(gm, dict(zip((p.name for p in placeholders), inputs)))
    steps, outputs = mapper.run()
    types = {path: type(m) for path, m in model.named_modules()}
    return Traced(model, dict(inputs), steps, outputs, types)


def _where(path: str, model: nn.Module) -> str:
    if not path:
        return f"the model ({type(model).__name__})"
    sub = model.get_submodule(path)
    return f"'{path}' ({_type_name(type(sub))})"


def _type_name(t: type) -> str:
    return t.__name__ if t.__module__.startswith("torch.nn") else f"{t.__module__}.{t.__qualname__}"


# ---------------------------------------------------------------------------------------------
# The mapping


class _Mapper:
    def __init__(self, gm: fx.GraphModule, inputs: dict[str, str]):
        self.gm = gm
        self.inputs = inputs  # placeholder -> input name
        self.names: dict[fx.Node, str] = {}  # tensor node -> the step or input holding its value
        self.steps: list[Step] = []
        self.calls: dict[str, int] = {}  # module path -> how many steps call it

    def run(self) -> tuple[list[Step], list[str]]:
        self.gm.graph.eliminate_dead_code()
        outputs: list[str] = []
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.names[node] = self.inputs[node.name]
            elif node.op == "output":
                outputs = self._outputs(node.args[0])
            elif not _is_tensor(node):
                self._shape_only(node)
            else:
                self._map(node)
        return _fuse_gap(self.steps, outputs), outputs

    def _outputs(self, out) -> list[str]:
        if isinstance(out, fx.Node):
            return [self.names[out]]
        if isinstance(out, (tuple, list)) and all(isinstance(o, fx.Node) and o in self.names for o in out):
            return [self.names[o] for o in out]
        raise UnsupportedError("the forward must return a tensor or a tuple of tensors")

    def _shape_only(self, node: fx.Node) -> None:
        """A value that is not a tensor: allowed only to compute a view's target shape."""
        shape_like = node.op == "call_method" and node.target in SHAPE_METHODS or \
            node.op == "call_function" and node.target in (getattr, operator.getitem)
        if not shape_like or not all(u.op == "call_method" and u.target in VIEWS or not _is_tensor(u)
                                     for u in node.users):
            self._unsupported(node)

    def _map(self, node: fx.Node) -> None:
        scope = tuple(node.meta.get("nn_module_stack", {}).values())
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            scope = tuple(e for e in scope if e[0] != node.target)
            handler = MODULES.get(type(module))
            if handler is None:
                self._unsupported(node)
            op, args = self._guard(node, lambda: handler(module, self._in_shape(node)))
            if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
                self.calls[node.target] = self.calls.get(node.target, 0) + 1
                if self.calls[node.target] > 1:
                    raise UnsupportedError(f"'{node.target}' ({_type_name(type(module))}) is called more than once: "
                                           "a module with weights must be used once (weight sharing is not imported)")
            self._add(node, op, args, [node.args[0]], scope, module=node.target)
        elif node.op == "call_function" and node.target in FUNCTIONS or \
                node.op == "call_method" and node.target in METHODS:
            self._function(node, scope)
        elif node.op == "call_method" and node.target in ALIAS_METHODS:
            self.names[node] = self.names[node.args[0]]
        elif node.op == "call_method" and node.target in VIEWS:
            self._view(node, scope)
        else:
            self._unsupported(node)

    def _function(self, node: fx.Node, scope) -> None:
        target = node.target if node.op == "call_function" else METHODS[node.target]
        names, defaults, build = FUNCTIONS[target]
        bound = dict(defaults)
        if node.op == "call_method":
            bound.update(METHOD_DEFAULTS.get(node.target, {}))
        bound.update(zip(names, node.args))
        bound.update(node.kwargs)
        if set(bound) - set(names):
            raise self._error(node, f"arguments {sorted(set(bound) - set(names))} are not supported")
        if target is F.adaptive_avg_pool2d:
            op, args = self._guard(node, lambda: adaptive(bound["output_size"], self._in_shape(node)))
        else:
            op, args = self._guard(node, lambda: build(bound, len(_shape_of(node.args[0])) if isinstance(
                node.args[0], fx.Node) else 0))
        tensors = list(bound["tensors"]) if op == "cat" else [bound["input"], bound["other"]] \
            if op in ("add", "mul") else [bound["input"]]
        if not all(isinstance(t, fx.Node) and t in self.names for t in tensors):
            raise self._error(node, f"'{op}' of something that is not a tensor of the network (a constant or a "
                                    "parameter) is not supported")
        self._add(node, op, args, tensors, scope)

    def _view(self, node: fx.Node, scope) -> None:
        src = node.args[0]
        s_in, s_out = _shape_of(src), _shape_of(node)
        if s_out == s_in:
            self.names[node] = self.names[src]
        elif len(s_out) == 2 and s_out[0] == s_in[0] and len(s_in) > 2:
            self._add(node, "flatten", {}, [src], scope)
        else:
            raise self._error(node, f"{node.target} from {list(s_in[1:])} to {list(s_out[1:])} is not supported "
                                    "(only flattening everything but the batch)")

    def _add(self, node: fx.Node, op: str, args: dict, inputs: list[fx.Node], scope, module=None) -> None:
        if op == "identity":
            self.names[node] = self.names[inputs[0]]
            return
        step = Step(node.name, op, args, tuple(self.names[i] for i in inputs), _shape_of(node)[1:],
                    module if op in _STATEFUL else None, scope, _shape_of(inputs[0])[1:])
        self.steps.append(step)
        self.names[node] = step.name

    def _in_shape(self, node: fx.Node) -> Shape:
        return _shape_of(node.args[0])[1:]

    def _guard(self, node: fx.Node, build):
        try:
            return build()
        except UnsupportedError as e:
            raise self._error(node, str(e), e.hint) from None

    def _error(self, node: fx.Node, problem: str, hint: str | None = None) -> UnsupportedError:
        return UnsupportedError(f"cannot import {self._describe(node)}: {problem}", hint=hint or supported())

    def _unsupported(self, node: fx.Node):
        raise UnsupportedError(f"cannot import {self._describe(node)}: no op of the language computes it",
                               hint=supported())

    def _describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"'{node.target}' ({_type_name(type(self.gm.get_submodule(node.target)))})"
        stack = list(node.meta.get("nn_module_stack", {}).values())
        where = f"'{stack[-1][0]}' ({_type_name(stack[-1][1])})" if stack else \
            f"the model ({type(self.gm).__name__})"
        what = {"call_function": lambda: f"the call {_qualified(node.target)}",
                "call_method": lambda: f"the tensor method .{node.target}()",
                "get_attr": lambda: f"the direct use of '{node.target}'"}.get(node.op, lambda: node.op)()
        return f"{what} in the forward of {where}"


_STATEFUL = frozenset({"conv", "linear", "batchnorm", "layernorm"})


def _qualified(fn) -> str:
    mod = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__name__", repr(fn))
    return f"{mod}.{name}" if mod and mod != "builtins" else name


def _is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _shape_of(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _fuse_gap(steps: list[Step], outputs: list[str]) -> list[Step]:
    """Adaptive average pooling to 1x1 followed by a flatten is `gap`; alone, on a square map,
    it is `avgpool` over the whole map."""
    readers: dict[str, list[Step]] = {}
    for s in steps:
        for i in s.inputs:
            readers.setdefault(i, []).append(s)
    out, dropped = [], set()
    for s in steps:
        if s.name in dropped:
            continue
        if s.op == "adaptive_gap":
            nxt = readers.get(s.name, [])
            if len(nxt) == 1 and nxt[0].op == "flatten" and s.name not in outputs:
                flat = nxt[0]
                dropped.add(flat.name)
                out.append(Step(flat.name, "gap", {}, s.inputs, flat.shape, None, s.scope, s.in_shape))
                continue
            c, h, w = s.in_shape
            if h != w:
                raise UnsupportedError(f"adaptive average pooling of a {h}x{w} map to 1x1 that is not flattened "
                                       "is not supported", hint="flatten right after it (that is `gap`)")
            s = Step(s.name, "avgpool", {"k": h}, s.inputs, s.shape, None, s.scope, s.in_shape)
        out.append(s)
    return out
