"""The shape model of the spec generator: an independent reading of the op rules of
`builtin_ops.py` and of the language's rules for merges, templates, shared modules and
references. The generator uses it to make only valid specs, and tests use it as an oracle:
the shapes it predicts must be the checker's.

Ops that packages register have no independent rules here; the model asks the op table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import ir
from ..ops import OpError, merges, ops
from ..visit import distinct_reads

Shape = tuple[int, ...]


class Invalid(Exception):
    """Raised by the shape model for something the checker rejects too."""


_REQ = object()  # a required argument

class _Signatures(Mapping):
    """The ops' signatures as the generator and this model read them: name -> ((argument,
    default), ...) in positional order, `_REQ` for a required argument. A live view of the op
    table, so that ops registered by packages are generated too."""

    def __getitem__(self, name: str) -> tuple[tuple[str, Any], ...]:
        op = ops()[name]
        return tuple((a.name, _REQ if a.required else a.default) for a in op.args)

    def __iter__(self):
        return iter(ops())

    def __len__(self) -> int:
        return len(ops())


#: The ops' signatures (see `_Signatures`).
SIGNATURES: Mapping[str, tuple[tuple[str, Any], ...]] = _Signatures()
#: The ops whose shape rules this model knows by itself (an independent reading of
#: builtin_ops.py); for any other op it asks the op table.
OWN_RULES = frozenset({"conv", "linear", "batchnorm", "layernorm", "relu", "gelu", "sigmoid", "tanh", "identity",
                       "softmax", "maxpool", "avgpool", "gap", "flatten", "dropout", "upsample", "proxy"})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos(v) -> int:
    if not _is_int(v) or v < 1:
        raise Invalid(f"expected a positive whole number, got {v!r}")
    return v


def _nonneg(v) -> int:
    if not _is_int(v) or v < 0:
        raise Invalid(f"expected a whole number >= 0, got {v!r}")
    return v


def _image(name: str, s: Shape) -> Shape:
    if len(s) != 3:
        raise Invalid(f"'{name}' needs [C, H, W], got {list(s)}")
    return s


def _out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def bind_args(name: str, sig, positional: list, keywords: dict) -> dict:
    """Match arguments to a signature the way calls do: positional first, then by name."""
    names = [n for n, _ in sig]
    if len(positional) > len(sig):
        raise Invalid(f"'{name}' takes at most {len(sig)} argument(s)")
    out = dict(zip(names, positional))
    for k, v in keywords.items():
        if k not in names or k in out:
            raise Invalid(f"bad keyword argument '{k}' of '{name}'")
        out[k] = v
    for n, d in sig:
        if n not in out:
            if d is _REQ:
                raise Invalid(f"'{name}' needs '{n}'")
            out[n] = d
    return out


def op_shape(name: str, a: dict, s: Shape) -> Shape:
    """The output shape of built-in op `name` with bound arguments `a` on input shape `s`.

    (Longer than most functions: one flat reading of every op's rule, kept in one place so it
    can be compared with builtin_ops.py line by line.)"""
    if name == "conv":
        c, h, w = _image(name, s)
        out, k, stride, pad, groups = (_pos(a["out"]), _pos(a["k"]), _pos(a["stride"]), _nonneg(a["pad"]),
                                       _pos(a["groups"]))
        if not isinstance(a["bias"], bool):
            raise Invalid("bias must be true or false")
        if c % groups or out % groups:
            raise Invalid("groups must divide channels and out")
        oh, ow = _out(h, k, stride, pad), _out(w, k, stride, pad)
        if oh < 1 or ow < 1:
            raise Invalid("conv leaves nothing")
        return (out, oh, ow)
    if name == "linear":
        if not isinstance(a["bias"], bool):
            raise Invalid("bias must be true or false")
        return s[:-1] + (_pos(a["out"]),)
    if name in ("batchnorm", "layernorm", "relu", "gelu", "sigmoid", "tanh", "identity"):
        return s
    if name == "softmax":
        d = a["dim"]
        if not _is_int(d) or not -len(s) <= d < len(s):
            raise Invalid("softmax dim out of range")
        return s
    if name in ("maxpool", "avgpool"):
        c, h, w = _image(name, s)
        k, pad = _pos(a["k"]), _nonneg(a["pad"])
        stride = k if a["stride"] is None else _pos(a["stride"])
        if pad > k // 2:
            raise Invalid("pool padding more than half its kernel")
        oh, ow = _out(h, k, stride, pad), _out(w, k, stride, pad)
        if oh < 1 or ow < 1:
            raise Invalid("pool leaves nothing")
        return (c, oh, ow)
    if name == "gap":
        return (_image(name, s)[0],)
    if name == "flatten":
        return (math.prod(s),)
    if name == "dropout":
        p = a["p"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise Invalid("dropout p must be in [0, 1)")
        return s
    if name == "upsample":
        c, h, w = _image(name, s)
        scale = _pos(a["scale"])
        if a["mode"] not in ("nearest", "bilinear"):
            raise Invalid("bad upsample mode")
        return (c, h * scale, w * scale)
    if name == "proxy":
        c, h, w = _image(name, s)
        out, stride = _pos(a["c"]), _pos(a["stride"])
        if stride > 1:
            h, w = _out(h, stride + 1, stride, stride // 2), _out(w, stride + 1, stride, stride // 2)
            if h < 1 or w < 1:
                raise Invalid("proxy pooling leaves nothing")
        return (out, h, w)
    return _table_shape(name, a, s)


def _table_shape(name: str, a: dict, s: Shape) -> Shape:
    """An op this model has no rules of: the op table's own (no independent oracle there)."""
    op = ops().get(name)
    if op is None:
        raise Invalid(f"unknown op '{name}'")
    try:
        return op.infer(s, op.bind([], a))
    except OpError as e:
        raise Invalid(str(e)) from None


@dataclass
class NetInfo:
    """What the shape model knows of a finished network."""

    name: str
    inputs: dict[str, Shape]
    shapes: dict[str, Shape]  # inputs and bindings, in definition order
    reads: dict[str, tuple[str, ...]]  # binding -> the distinct inputs/bindings it reads (after skips)
    uses_shared: set[str] = field(default_factory=set)  # bindings that use a shared module somewhere


@dataclass
class Tracker:
    """Shapes of chains, elements and template instances, given the spec's definitions."""

    templates: dict[str, ir.Block] = field(default_factory=dict)
    shared: dict[str, tuple[ir.Shared, Shape]] = field(default_factory=dict)  # with its input shape
    nets: dict[str, NetInfo] = field(default_factory=dict)

    def value(self, e, params: dict):
        if isinstance(e, (ir.Number, ir.String, ir.Bool)):
            return e.value
        if isinstance(e, ir.ListValue):
            return [self.value(x, params) for x in e.items]
        if isinstance(e, ir.Ref) and len(e.parts) == 1 and e.parts[0] in params:
            return params[e.parts[0]]
        raise Invalid(f"not a value: {e!r}")

    def args(self, args, params) -> tuple[list, dict]:
        positional, keywords = [], {}
        for a in args:
            v = self.value(a.value, params)
            if a.name is None:
                if keywords:
                    raise Invalid("positional argument after a keyword argument")
                positional.append(v)
            else:
                keywords[a.name] = v
        return positional, keywords

    def chain(self, c: ir.Chain, env: dict, params: dict, stack: tuple = ()) -> Shape:
        s = self.source(c.source, env, params, stack)
        for el in c.elements:
            s = self.element(el, s, params, stack)
        return s

    def source(self, src, env: dict, params: dict, stack: tuple) -> Shape:
        if isinstance(src, ir.Chain):
            return self.chain(src, env, params, stack)
        if isinstance(src, ir.In):
            if "in" not in env:
                raise Invalid("'in' outside a template body")
            return env["in"]
        if isinstance(src, ir.Ref) and len(src.parts) == 1:
            if src.parts[0] not in env or src.parts[0] == "in":
                raise Invalid(f"undefined name '{src.parts[0]}'")
            return env[src.parts[0]]
        if isinstance(src, ir.Call) and len(src.ref.parts) == 1 and src.ref.parts[0] in merges():
            return self.merge(src, env, params, stack)
        raise Invalid(f"bad chain source {src!r}")

    def merge(self, call: ir.Call, env: dict, params: dict, stack: tuple) -> Shape:
        op = call.ref.parts[0]
        paths = [a.value for a in call.args if a.name is None]
        kwargs = {a.name: a.value for a in call.args if a.name is not None}
        if set(kwargs) - {a.name for a in merges()[op].args} or len(paths) < 2:
            raise Invalid(f"bad arguments of '{op}'")
        shapes = [self.chain(p, env, params, stack) if isinstance(p, ir.Chain)
                  else self.source(p, env, params, stack) for p in paths]
        if op not in ("add", "mul", "gate", "cat"):  # a merge of a package: the table's rules
            try:
                return merges()[op].infer(shapes, merges()[op].bind([], {k: self.value(v, params)
                                                                         for k, v in kwargs.items()}))
            except OpError as e:
                raise Invalid(str(e)) from None
        if op == "cat":
            dim = self.value(kwargs["dim"], params) if "dim" in kwargs else 0
            rank = len(shapes[0])
            if not _is_int(dim) or not -rank <= dim < rank:
                raise Invalid("bad cat dim")
            d = dim % rank
            for s in shapes:
                if len(s) != rank or s[:d] + s[d + 1:] != shapes[0][:d] + shapes[0][d + 1:]:
                    raise Invalid("cat of mismatched shapes")
            return shapes[0][:d] + (sum(s[d] for s in shapes),) + shapes[0][d + 1:]
        if any(s != shapes[0] for s in shapes):
            raise Invalid(f"'{op}' of unequal shapes")
        if op == "gate" and "init" in kwargs:
            init = self.value(kwargs["init"], params)
            if not isinstance(init, list) or len(init) != len(paths) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in init):
                raise Invalid("bad gate init")
        if op == "gate" and "mix" in kwargs and self.value(kwargs["mix"], params) not in ("sum", "relu"):
            raise Invalid("bad gate mix")
        return shapes[0]

    def element(self, el: ir.Element, s: Shape, params: dict, stack: tuple = ()) -> Shape:
        t = el.target
        if isinstance(t, ir.Range):
            return self.reference(t, s)
        ref = t.ref if isinstance(t, ir.Call) else t
        args = t.args if isinstance(t, ir.Call) else ()
        if len(ref.parts) > 1:
            if isinstance(t, ir.Call):
                raise Invalid("a reference takes no arguments")
            return self.reference(ref, s)
        name = ref.parts[0]
        if name == "copy":
            if not isinstance(t, ir.Call) or len(args) != 1 or args[0].name is not None:
                raise Invalid("copy takes one reference")
            target = args[0].value
            if not (isinstance(target, ir.Range) or isinstance(target, ir.Ref) and len(target.parts) > 1):
                raise Invalid("copy takes one reference")
            return self.reference(target, s)
        if name in self.templates:
            return self.template(self.templates[name], args, s, params, stack)
        if name in self.shared:
            sh, in_shape = self.shared[name]
            if isinstance(t, ir.Call) or s != in_shape:
                raise Invalid(f"shared module '{name}' used with another input shape")
            for e in sh.pipe.elements:
                s = self.element(e, s, {}, stack)
            return s
        if name in SIGNATURES:
            positional, keywords = self.args(args, params)
            return op_shape(name, bind_args(name, SIGNATURES[name], positional, keywords), s)
        raise Invalid(f"unknown element '{name}'")

    def template(self, block: ir.Block, args, s: Shape, params: dict, stack: tuple) -> Shape:
        if block.name in stack:
            raise Invalid("recursive template")
        positional, keywords = self.args(args, params)
        sig = tuple((p.name, _REQ if p.default is None else self.value(p.default, {})) for p in block.params)
        bound = bind_args(block.name, sig, positional, keywords)
        inner = stack + (block.name,)
        if block.pipe is not None:
            for el in block.pipe.elements:
                s = self.element(el, s, bound, inner)
            return s
        env: dict[str, Shape] = {"in": s}
        result = None
        for stmt in block.body or ():
            if isinstance(stmt, ir.Binding):
                if stmt.name in env:
                    raise Invalid("duplicate name in a template body")
                env[stmt.name] = self.chain(stmt.chain, env, bound, inner)
            elif isinstance(stmt, ir.Return):
                if len(stmt.names) != 1 or stmt.names[0] not in env or stmt.names[0] == "in":
                    raise Invalid("bad template return")
                result = env[stmt.names[0]]
            else:
                raise Invalid("skips in a template")
        if result is None:
            raise Invalid("template without return")
        return result

    def path(self, net: NetInfo, start: str, end: str) -> list[str]:
        """The bindings a range `net.start..end` composes (each reads only the one before)."""
        path = [end]
        while path[0] != start:
            reads = net.reads.get(path[0])
            if reads is None or len(reads) != 1 or reads[0] not in net.reads or reads[0] in path:
                raise Invalid(f"'{net.name}.{start}..{end}' is not a straight path")
            path.insert(0, reads[0])
        return path

    def reference(self, t, s: Shape) -> Shape:
        ref = t.start if isinstance(t, ir.Range) else t
        net = self.nets.get(ref.parts[0])
        if net is None or len(ref.parts) != 2:
            raise Invalid(f"unknown reference '{ref.dotted}'")
        names = self.path(net, ref.parts[1], t.end) if isinstance(t, ir.Range) else [ref.parts[1]]
        for name in names:
            reads = net.reads.get(name)
            if reads is None or len(reads) != 1:
                raise Invalid(f"'{net.name}.{name}' does not read exactly one value")
            if net.shapes[reads[0]] != s:
                raise Invalid(f"'{net.name}.{name}' expects {list(net.shapes[reads[0]])}, got {list(s)}")
            s = net.shapes[name]
        return s


    def uses_shared(self, e) -> bool:
        """Whether a chain, element or definition uses a shared module (through anything)."""
        if isinstance(e, ir.Chain):
            return (e.source is not None and self.uses_shared(e.source)) or any(
                self.uses_shared(x) for x in e.elements)
        if isinstance(e, ir.Element):
            return self.uses_shared(e.target)
        if isinstance(e, ir.Call):
            if e.ref.parts[0] in merges() or e.ref.parts == ("copy",):
                return any(self.uses_shared(a.value) for a in e.args)
            return self.uses_shared(e.ref)
        if isinstance(e, ir.Range):
            net = self.nets[e.start.parts[0]]
            return any(b in net.uses_shared for b in self.path(net, e.start.parts[1], e.end))
        if isinstance(e, ir.Ref):
            if len(e.parts) == 2 and e.parts[0] in self.nets:
                return e.parts[1] in self.nets[e.parts[0]].uses_shared
            name = e.parts[0]
            if name in self.shared:
                return True
            block = self.templates.get(name)
            if block is not None:
                stmts = [block.pipe] if block.pipe is not None else [b.chain for b in block.body or ()
                                                                      if isinstance(b, ir.Binding)]
                return any(self.uses_shared(c) for c in stmts)
        return False


def safe_returns(stmts) -> list[str]:
    """The bindings of a template body it can return without the result being read inside the
    body (AVOIDED: template-result-read-inside). Never empty: the last binding that is not an
    alias qualifies, and when all are aliases they all do."""
    alias: dict[str, str] = {}

    def root(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    read: set[str] = set()
    for b in stmts:
        c = b.chain
        if not c.elements and isinstance(c.source, (ir.Ref, ir.In)):
            alias[b.name] = "in" if isinstance(c.source, ir.In) else c.source.parts[0]
        else:
            read |= {root(n) for n in distinct_reads(c, with_in=True)}
    return [b.name for b in stmts if root(b.name) not in read]
