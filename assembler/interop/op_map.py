"""What each PyTorch leaf module, function and tensor method means in the language: a table
from module types and functions to (op, arguments), with the checks that refuse what an op
cannot express (a dilated conv, a non-square window, another eps). `trace.py` applies it."""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

Shape = tuple[int, ...]

class UnsupportedError(Exception):
    """A module, function or configuration that no op of the language computes."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


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


def adaptive(size, s: Shape) -> tuple[str, dict]:
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
    nn.AdaptiveAvgPool2d: lambda m, s: adaptive(m.output_size, s),
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
METHOD_DEFAULTS = {"flatten": {"start_dim": 0, "end_dim": -1}}
ALIAS_METHODS = frozenset({"contiguous"})
SHAPE_METHODS = frozenset({"size", "dim"})
VIEWS = frozenset({"view", "reshape"})


def supported() -> str:
    """The supported list, for error hints."""
    mods = ", ".join(t.__name__ for t in MODULES)
    fns = ", ".join(sorted({getattr(f, "__name__", str(f)).strip("_") for f in FUNCTIONS}))
    meths = ", ".join(sorted(set(METHODS) | ALIAS_METHODS | VIEWS | SHAPE_METHODS))
    return f"supported modules: {mods}; functions: {fns}; tensor methods: {meths} (view/reshape only to flatten)"
