"""The op table: each built-in op's arguments, output shape, parameter and FLOP counts, and
(for the compiler) its module constructor. Installed packages add ops through the
`assembler.ops` entry-point group or `register_op`; a spec never names Python code.

Shapes leave out the batch dimension. FLOPs are multiply-accumulates per sample (the unit
of the papers' tables), counted for the forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

Shape = tuple[int, ...]


class OpError(Exception):
    """A bad argument or input shape; `arg` names the argument at fault, if any."""

    def __init__(self, message: str, arg: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.arg = arg
        self.hint = hint


@dataclass(frozen=True)
class Arg:
    name: str
    kind: type | tuple[type, ...]  # int, float, bool, str
    default: Any = ...  # ... = required
    check: Callable[[Any], str | None] | None = None  # returns an error text, or None

    @property
    def required(self) -> bool:
        return self.default is ...


@dataclass(frozen=True)
class Op:
    """A built-in op. `infer(shape, args)` returns the output shape; `count(shape, args, out)`
    returns (parameters, FLOPs); `build(shape, args)` returns the torch module, or None for
    a parameter-free op that the compiler calls as a function."""

    name: str
    args: tuple[Arg, ...] = ()
    infer: Callable[[Shape, dict], Shape] = lambda s, a: s
    count: Callable[[Shape, dict, Shape], tuple[int, int]] = lambda s, a, o: (0, 0)
    build: Callable[[Shape, dict], Any] | None = None
    doc: str = ""
    module: bool = False  # has parameters or state: compiled to a module, not a function

    def bind(self, positional: list, keywords: dict) -> dict:
        """Match call arguments to this op's parameters; raise OpError on a mismatch."""
        if len(positional) > len(self.args):
            raise OpError(f"'{self.name}' takes at most {len(self.args)} argument(s), got {len(positional)}",
                          hint=self.signature())
        out = {a.name: v for a, v in zip(self.args, positional)}
        names = [a.name for a in self.args]
        for key, value in keywords.items():
            if key not in names:
                from .errors import did_you_mean
                raise OpError(f"'{self.name}' has no argument '{key}'", arg=key,
                              hint=did_you_mean(key, names) or self.signature())
            if key in out:
                raise OpError(f"argument '{key}' of '{self.name}' is given twice", arg=key)
            out[key] = value
        for a in self.args:
            if a.name not in out:
                if a.required:
                    raise OpError(f"'{self.name}' needs the argument '{a.name}'", hint=self.signature())
                out[a.name] = a.default
            value = out[a.name]
            if value is None and a.default is None:
                continue
            if not _is(value, a.kind):
                raise OpError(f"argument '{a.name}' of '{self.name}' must be {_kind_name(a.kind)}, got {_show(value)}",
                              arg=a.name)
            if isinstance(a.kind, type) and a.kind is float and isinstance(value, int):
                out[a.name] = value = float(value)
            if a.check and (problem := a.check(value)):
                raise OpError(f"argument '{a.name}' of '{self.name}' {problem}, got {_show(value)}", arg=a.name)
        return out

    def signature(self) -> str:
        parts = [a.name if a.required else f"{a.name}={_show(a.default)}" for a in self.args]
        return f"{self.name}({', '.join(parts)})" if parts else self.name


def _is(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return any(isinstance(value, k) and k is not bool for k in kinds)


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _show(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def positive(v) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must not be negative"


def probability(v) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


# ---------------------------------------------------------------------------------------------
# Shape helpers


def _spatial(op: str, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise OpError(f"'{op}' needs a [channels, height, width] input, got {list(shape)}",
                      hint="images are [C, H, W]; 'gap' or 'flatten' turns them into vectors")
    return shape


def _window(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _pooled(op: str, shape: Shape, k: int, stride: int, pad: int) -> Shape:
    c, h, w = _spatial(op, shape)
    if pad > k // 2:
        raise OpError(f"'{op}' padding {pad} is more than half its kernel {k}", arg="pad")
    oh, ow = _window(h, k, stride, pad), _window(w, k, stride, pad)
    if oh < 1 or ow < 1:
        raise OpError(f"'{op}({k})' of a {h}x{w} input leaves nothing (output {max(oh, 0)}x{max(ow, 0)})",
                      hint="use a smaller kernel or pool earlier in the network less")
    return (c, oh, ow)


# ---------------------------------------------------------------------------------------------
# The ops


def _conv_infer(s: Shape, a: dict) -> Shape:
    c, h, w = _spatial("conv", s)
    if c % a["groups"] or a["out"] % a["groups"]:
        raise OpError(f"'conv' groups={a['groups']} must divide both the input channels ({c}) and out ({a['out']})",
                      arg="groups")
    oh, ow = _window(h, a["k"], a["stride"], a["pad"]), _window(w, a["k"], a["stride"], a["pad"])
    if oh < 1 or ow < 1:
        raise OpError(f"'conv' with kernel {a['k']} on a {h}x{w} input leaves nothing",
                      hint="add padding (pad=...) or use a smaller kernel")
    return (a["out"], oh, ow)


def _conv_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    per_out = (s[0] // a["groups"]) * a["k"] * a["k"]
    params = a["out"] * per_out + (a["out"] if a["bias"] else 0)
    return params, o[0] * o[1] * o[2] * per_out


def _linear_infer(s: Shape, a: dict) -> Shape:
    return s[:-1] + (a["out"],)


def _linear_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    rows = math.prod(s[:-1])
    params = s[-1] * a["out"] + (a["out"] if a["bias"] else 0)
    return params, rows * s[-1] * a["out"]


def _max_rank(op: str, s: Shape, rank: int) -> Shape:
    if len(s) > rank:
        raise OpError(f"'{op}' takes inputs of at most {rank} dimensions ([C], [C, L] or [C, H, W]), got {list(s)}")
    return s


def _numel(s: Shape) -> int:
    return math.prod(s)


def _norm_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    return 2 * s[0], _numel(s)


def _layernorm_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    return 2 * s[-1], 2 * _numel(s)


def _elementwise(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    return 0, _numel(s)


def _gap_infer(s: Shape, a: dict) -> Shape:
    _spatial("gap", s)
    return (s[0],)


def _softmax_infer(s: Shape, a: dict) -> Shape:
    if not -len(s) <= a["dim"] < len(s):
        raise OpError(f"'softmax' dim={a['dim']} is out of range for a {len(s)}-d input {list(s)}", arg="dim")
    return s


def _upsample_infer(s: Shape, a: dict) -> Shape:
    c, h, w = _spatial("upsample", s)
    return (c, h * a["scale"], w * a["scale"])


def _proxy_infer(s: Shape, a: dict) -> Shape:
    c, h, w = _spatial("proxy", s)
    st = a["stride"]
    if st > 1:
        c, h, w = _pooled("proxy", s, st + 1, st, st // 2)
    return (a["c"], h, w)


def _proxy_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    conv = s[0] * a["c"]
    return conv + 2 * a["c"], o[1] * o[2] * conv


def _modes(v) -> str | None:
    return None if v in ("nearest", "bilinear") else 'must be "nearest" or "bilinear"'


OPS: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    """Add an op to the table (a package's entry point in group `assembler.ops` calls this)."""
    if op.name in OPS and OPS[op.name] is not op:
        raise ValueError(f"op '{op.name}' is already registered")
    OPS[op.name] = op
    return op


for _op in [
    Op("conv", (Arg("out", int, check=positive), Arg("k", int, check=positive), Arg("stride", int, 1, positive),
                Arg("pad", int, 0, non_negative), Arg("groups", int, 1, positive), Arg("bias", bool, True)),
       _conv_infer, _conv_count, doc="2-d convolution", module=True),
    Op("linear", (Arg("out", int, check=positive), Arg("bias", bool, True)), _linear_infer, _linear_count,
       doc="fully connected layer over the last dimension", module=True),
    Op("batchnorm", (), lambda s, a: _max_rank("batchnorm", s, 3), _norm_count,
       doc="batch normalisation over channels (dim 0)", module=True),
    Op("layernorm", (), lambda s, a: s, _layernorm_count, doc="layer normalisation over the last dimension", module=True),
    Op("relu", (), lambda s, a: s, _elementwise),
    Op("gelu", (), lambda s, a: s, _elementwise),
    Op("sigmoid", (), lambda s, a: s, _elementwise),
    Op("tanh", (), lambda s, a: s, _elementwise),
    Op("softmax", (Arg("dim", int, 0),), _softmax_infer, _elementwise, doc="softmax; dim counts without the batch"),
    Op("maxpool", (Arg("k", int, check=positive), Arg("stride", int, None, positive), Arg("pad", int, 0, non_negative)),
       lambda s, a: _pooled("maxpool", s, a["k"], a["stride"] or a["k"], a["pad"]),
       lambda s, a, o: (0, _numel(o) * a["k"] * a["k"])),
    Op("avgpool", (Arg("k", int, check=positive), Arg("stride", int, None, positive), Arg("pad", int, 0, non_negative)),
       lambda s, a: _pooled("avgpool", s, a["k"], a["stride"] or a["k"], a["pad"]),
       lambda s, a, o: (0, _numel(o) * a["k"] * a["k"])),
    Op("gap", (), _gap_infer, lambda s, a, o: (0, _numel(s)), doc="global average pool, then flatten"),
    Op("flatten", (), lambda s, a: (_numel(s),)),
    Op("dropout", (Arg("p", float, check=probability),), module=True),
    Op("identity", ()),
    Op("upsample", (Arg("scale", int, check=positive), Arg("mode", str, "nearest", _modes)), _upsample_infer,
       lambda s, a, o: (0, _numel(o))),
    Op("proxy", (Arg("c", int, check=positive), Arg("stride", int, 1, positive)), _proxy_infer, _proxy_count,
       doc="NetTailor's lean proxy: max-pool when stride > 1, bias-free 1x1 conv, batch-norm", module=True),
]:
    register_op(_op)

# Merges take several chains; their shape rules live in the lowering pass.
MERGES = frozenset({"add", "mul", "cat", "gate"})
# Names with a fixed meaning in a chain besides ops.
SPECIAL = frozenset({"copy"})

_plugins_loaded = False


def ops() -> dict[str, Op]:
    """The op table, with installed packages' ops loaded on first use."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in entry_points(group="assembler.ops"):
            loaded = ep.load()
            for op in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
                if isinstance(op, Op) and op.name not in OPS:
                    register_op(op)
    return OPS


def builtin_names() -> frozenset[str]:
    """Names a user may not take for a template, shared module or network."""
    return frozenset(ops()) | MERGES | SPECIAL
