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
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

Shape = tuple[int, ...]


class UnsupportedError(Exception):
    """A module, function or configuration that no op of the language computes."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


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
# What maps to what


def _conv(m: nn.Conv2d, s: Shape) -> tuple[str, dict]:
    k = _square("kernel_size", m.kernel_size)
    if m.padding_mode != "zeros":
        raise UnsupportedError(f"padding_mode='{m.padding_mode}' is not supported (the language's conv pads with "
                               "zeros)")
    if _pair(m.dilation) != (1, 1):
        raise UnsupportedError(f"dilation={m.dilation} is not supported (the language's conv has dilation 1)")
    if isinstance(m.padding, str):
        if m.padding == "valid":
            pad = 0
        elif k % 2 == 1 and _pair(m.stride) == (1, 1):
            pad = k // 2
        else:
            raise UnsupportedError(f"padding='same' with kernel {k} pads unevenly, which the language's conv cannot")
    else:
        pad = _square("padding", m.padding)
    return "conv", {"out": m.out_channels, "k": k, "stride": _square("stride", m.stride), "pad": pad,
                    "groups": m.groups, "bias": m.bias is not None}


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, s: Shape) -> tuple[str, dict]:
    if not m.affine or not m.track_running_stats:
        raise UnsupportedError("batch-norm without affine parameters or running statistics is not supported")
    _eps(m.eps)
    want = 3 if isinstance(m, nn.BatchNorm2d) else None
    if want is not None and len(s) != want or want is None and len(s) not in (1, 2):
        raise UnsupportedError(f"{type(m).__name__} on an input of shape {list(s)} is not supported")
    return "batchnorm", {}


def _layernorm(m: nn.LayerNorm, s: Shape) -> tuple[str, dict]:
    if tuple(m.normalized_shape) != (s[-1],):
        raise UnsupportedError(f"LayerNorm over {list(m.normalized_shape)} is not supported (the language's "
                               "layernorm normalises the last dimension only)")
    if not m.elementwise_affine or m.bias is None:
        raise UnsupportedError("LayerNorm without its weight and bias is not supported")
    _eps(m.eps)
    return "layernorm", {}


def _eps(eps: float) -> None:
    if eps != 1e-5:
        raise UnsupportedError(f"eps={eps} is not supported (the language's normalisation layers use eps=1e-05)")


def _gelu(approximate: str) -> tuple[str, dict]:
    if approximate != "none":
        raise UnsupportedError(f"GELU(approximate='{approximate}') is not supported (the language's gelu is exact)")
    return "gelu", {}


def _softmax(dim, rank: int, dtype=None) -> tuple[str, dict]:
    if dtype is not None:
        raise UnsupportedError(f"softmax with dtype={dtype} is not supported")
    if dim is None:
        raise UnsupportedError("softmax without dim is not supported: give dim explicitly")
    if dim == 0 or dim == -(rank + 1):
        raise UnsupportedError("softmax over the batch dimension is not supported")
    return "softmax", {"dim": dim - 1 if dim > 0 else dim}


def _pool(op: str, k, stride, pad, ceil_mode=False, dilation=1, count_include_pad=True,
          divisor_override=None, return_indices=False) -> tuple[str, dict]:
    if ceil_mode or return_indices or _pair(dilation) != (1, 1) or not count_include_pad or divisor_override:
        raise UnsupportedError(f"{op} with ceil_mode, dilation, return_indices, count_include_pad=False or "
                               "divisor_override is not supported")
    k = _square("kernel_size", k)
    stride = k if stride is None or stride == [] else _square("stride", stride)
    args = {"k": k}
    if stride != k:
        args["stride"] = stride
    if _square("padding", pad):
        args["pad"] = _square("padding", pad)
    return op, args


def _adaptive(size, s: Shape) -> tuple[str, dict]:
    oh, ow = _pair(size)
    oh, ow = oh or s[1], ow or s[2]  # None keeps the input size
    if (oh, ow) == (1, 1):
        return "adaptive_gap", {}  # becomes `gap` with the flatten that follows it (see _fuse_gap)
    if s[1] % oh or s[2] % ow or s[1] // oh != s[2] // ow:
        raise UnsupportedError(f"adaptive average pooling of a {s[1]}x{s[2]} map to {oh}x{ow} is not a plain "
                               "pooling (the sizes do not divide evenly)")
    k = s[1] // oh
    return ("identity", {}) if k == 1 else ("avgpool", {"k": k})


def _upsample(scale, mode: str, align_corners, size=None) -> tuple[str, dict]:
    if size is not None or scale is None:
        raise UnsupportedError("upsampling to a size is not supported: give an integer scale_factor")
    sh, sw = _pair(scale)
    if sh != sw or float(sh) != int(sh):
        raise UnsupportedError(f"scale_factor={scale} is not supported (a whole number, the same for H and W)")
    if mode not in ("nearest", "bilinear") or align_corners:
        raise UnsupportedError(f"mode='{mode}', align_corners={align_corners} is not supported (nearest, or "
                               "bilinear without align_corners)")
    args = {"scale": int(sh)}
    if mode != "nearest":
        args["mode"] = mode
    return "upsample", args


def _square(name: str, v) -> int:
    a, b = _pair(v)
    if a != b:
        raise UnsupportedError(f"{name}={tuple(v)} is not supported (the language's ops take square windows)")
    return int(a)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# leaf module type -> (module, input shape) -> (op, args)
MODULES: dict[type, Callable[[nn.Module, Shape], tuple[str, dict]]] = {
    nn.Conv2d: _conv,
    nn.Linear: lambda m, s: ("linear", {"out": m.out_features, "bias": m.bias is not None}),
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.LayerNorm: _layernorm,
    nn.ReLU: lambda m, s: ("relu", {}),
    nn.GELU: lambda m, s: _gelu(m.approximate),
    nn.Sigmoid: lambda m, s: ("sigmoid", {}),
    nn.Tanh: lambda m, s: ("tanh", {}),
    nn.Softmax: lambda m, s: _softmax(m.dim, len(s)),
    nn.MaxPool2d: lambda m, s: _pool("maxpool", m.kernel_size, m.stride, m.padding, m.ceil_mode, m.dilation,
                                     return_indices=m.return_indices),
    nn.AvgPool2d: lambda m, s: _pool("avgpool", m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                     count_include_pad=m.count_include_pad, divisor_override=m.divisor_override),
    nn.AdaptiveAvgPool2d: lambda m, s: _adaptive(m.output_size, s),
    nn.Flatten: lambda m, s: _flatten(m.start_dim, m.end_dim),
    nn.Dropout: lambda m, s: ("dropout", {"p": float(m.p)}),
    nn.Identity: lambda m, s: ("identity", {}),
    nn.Upsample: lambda m, s: _upsample(m.scale_factor, m.mode, m.align_corners, m.size),
}


def _flatten(start: int = 1, end: int = -1) -> tuple[str, dict]:
    if start != 1 or end != -1:
        raise UnsupportedError(f"flatten(start_dim={start}, end_dim={end}) is not supported (only start_dim=1, "
                               "end_dim=-1: everything but the batch)")
    return "flatten", {}


def _mean(dims, keepdim: bool = False, rank: int = 4) -> tuple[str, dict]:
    dims = sorted(d % rank for d in (dims if isinstance(dims, (tuple, list)) else (dims,)))
    if rank != 4 or dims != [2, 3] or keepdim:
        raise UnsupportedError(f"mean over {dims} (keepdim={keepdim}) is not supported (only the global average "
                               "over H and W, which is `gap`)")
    return "gap", {}


def _no(what: str):
    raise UnsupportedError(f"{what} is not supported")


def _cat(tensors, dim: int = 0) -> tuple[str, dict]:
    if dim == 0:
        raise UnsupportedError("cat along the batch dimension is not supported")
    return "cat", {"dim": dim - 1 if dim > 0 else dim}


# function -> (argument names, defaults, (bound arguments, input rank) -> (op, args))
FUNCTIONS: dict[Any, tuple[tuple[str, ...], dict, Callable[[dict, int], tuple[str, dict]]]] = {}


def _fn(targets, names, defaults, build) -> None:
    for t in targets:
        FUNCTIONS[t] = (tuple(names), defaults, build)


_fn([operator.add, operator.iadd, torch.add], ("input", "other", "alpha"), {"alpha": 1},
    lambda a, r: ("add", {}) if a["alpha"] == 1 else _no("add with alpha"))
_fn([operator.mul, operator.imul, torch.mul], ("input", "other"), {}, lambda a, r: ("mul", {}))
_fn([torch.cat, torch.concat, torch.concatenate], ("tensors", "dim"), {"dim": 0},
    lambda a, r: _cat(a["tensors"], a["dim"]))
_fn([torch.relu, torch.relu_, F.relu, F.relu_], ("input", "inplace"), {}, lambda a, r: ("relu", {}))
_fn([F.gelu], ("input", "approximate"), {"approximate": "none"}, lambda a, r: _gelu(a["approximate"]))
_fn([torch.sigmoid, F.sigmoid], ("input",), {}, lambda a, r: ("sigmoid", {}))
_fn([torch.tanh, F.tanh], ("input",), {}, lambda a, r: ("tanh", {}))
_fn([torch.softmax, F.softmax], ("input", "dim", "_stacklevel", "dtype"), {"dim": None, "dtype": None},
    lambda a, r: _softmax(a["dim"], r - 1, a["dtype"]))
_fn([F.max_pool2d], ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False},
    lambda a, r: _pool("maxpool", a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"], a["dilation"],
                       return_indices=a["return_indices"]))
_fn([F.avg_pool2d], ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                     "divisor_override"),
    {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None},
    lambda a, r: _pool("avgpool", a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                       count_include_pad=a["count_include_pad"], divisor_override=a["divisor_override"]))
_fn([F.adaptive_avg_pool2d], ("input", "output_size"), {}, None)  # needs the input shape: see _Mapper
_fn([torch.flatten], ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1},
    lambda a, r: _flatten(a["start_dim"], a["end_dim"]))
_fn([F.dropout], ("input", "p", "training", "inplace"), {"p": 0.5}, lambda a, r: ("dropout", {"p": float(a["p"])}))
_fn([F.interpolate], ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                      "antialias"),
    {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None, "antialias": False},
    lambda a, r: _upsample(a["scale_factor"], a["mode"], a["align_corners"] or a["antialias"], a["size"]))
_fn([torch.mean], ("input", "dim", "keepdim"), {"keepdim": False}, lambda a, r: _mean(a["dim"], a["keepdim"], r))

# tensor method -> the function it means
METHODS: dict[str, Any] = {
    "relu": torch.relu, "relu_": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softmax": torch.softmax,
    "flatten": torch.flatten, "mean": torch.mean, "add": torch.add, "mul": torch.mul, "__add__": operator.add,
}
_METHOD_DEFAULTS = {"flatten": {"start_dim": 0, "end_dim": -1}}
ALIAS_METHODS = frozenset({"contiguous"})
SHAPE_METHODS = frozenset({"size", "dim"})
VIEWS = frozenset({"view", "reshape"})


def supported() -> str:
    """The supported list, for error hints."""
    mods = ", ".join(t.__name__ for t in MODULES)
    fns = ", ".join(sorted({getattr(f, "__name__", str(f)).strip("_") for f in FUNCTIONS}))
    meths = ", ".join(sorted(set(METHODS) | ALIAS_METHODS | VIEWS | SHAPE_METHODS))
    return f"supported modules: {mods}; functions: {fns}; tensor methods: {meths} (view/reshape only to flatten)"


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
            bound.update(_METHOD_DEFAULTS.get(node.target, {}))
        bound.update(zip(names, node.args))
        bound.update(node.kwargs)
        if set(bound) - set(names):
            raise self._error(node, f"arguments {sorted(set(bound) - set(names))} are not supported")
        if target is F.adaptive_avg_pool2d:
            op, args = self._guard(node, lambda: _adaptive(bound["output_size"], self._in_shape(node)))
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
