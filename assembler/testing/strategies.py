"""Hypothesis strategies that generate VALID `.net` specs as syntax IR (`assembler.ir.Spec`).

    from hypothesis import given
    from assembler.testing import strategies as sst

    @given(sst.specs())
    def test_my_pass(spec):
        ...

Strategies:

    specs(min_networks=1, max_networks=3, max_bindings=8)   -> ir.Spec
    specs_with_shapes(...)                                  -> (ir.Spec, {net: {name: shape}})
    networks(max_bindings=8)                                -> ir.Spec holding exactly one network
    names()                                                 -> a name that is neither a keyword nor a built-in

and, without Hypothesis (same generator, seeded, no shrinking):

    random_spec(seed, min_networks=1, max_networks=3, max_bindings=8) -> (ir.Spec, shapes)

Every generated spec passes `assembler.check`. The generator tracks shapes itself, with its
own small model of the op rules (`op_shape`) and of templates, shared modules, merges,
references, ranges, copies and `skips`; `specs_with_shapes` hands that model's shapes out
(inputs and bindings of every network) so tests can compare them with the checker's.

The specs cover: image inputs [C, H, W] (C in 1..4, H and W in {4, 8, 16}) and vector inputs
[n]; every built-in op with varied positional/keyword/default arguments; merges add, mul,
gate (with and without `init=[...]`) over paths of equal shape and cat along any dimension
(nested merges included); pipe templates `block f(c, s=1) = ...` and body templates
`block f(c) { a = in -> ... return a }` whose arguments come from parameters (templates
using templates and shared modules); `shared` and `frozen shared` modules used by several
networks; `frozen`/`trainable`/`adapter` bindings and `frozen`/`trainable` elements;
references `other.b`, ranges `other.a..c` and `copy(...)` of same-file bindings (in
network bodies, templates and shared modules); `skips` (with `k=` and a `proxy=` template);
`return` of one or two bindings; `match` edges and `train` sections; networks that refer to
networks defined below them, and templates and shared modules defined after their uses.

A few valid constructs are left out while the checker mishandles them: see `AVOIDED`.
Numbers are built as `ir.Number(value=...)` with no `text`; no node carries a span.
"""

from __future__ import annotations

import functools
import math
import random
import string
from dataclasses import dataclass, field
from typing import Any, Callable

from hypothesis import strategies as st

from .. import ir
from ..lower import python_reserved
from ..ops import builtin_names
from ..parser import KEYWORDS

__all__ = [
    "AVOIDED", "Invalid", "NetInfo", "RESERVED", "SIGNATURES", "Tracker", "names", "networks", "op_shape",
    "random_spec", "safe_returns", "specs", "specs_with_shapes",
]

Shape = tuple[int, ...]

#: Names a generated spec never uses for a template, shared module, network, input, binding
#: or parameter: the language's keywords and the built-in op, merge and special names.
RESERVED: frozenset[str] = frozenset(KEYWORDS) | builtin_names() | python_reserved()

#: Valid constructs the strategies leave out because the checker mishandles them today; each
#: is reproduced by an `xfail(strict=True)` test in tests/test_strategies.py. Remove an entry
#: (and the guard that names it) once the bug is fixed.
AVOIDED: dict[str, str] = {}

# Size limits that keep generated networks small enough to compile and run quickly.
MAX_CHANNELS = 32
MAX_SPATIAL = 32
MAX_NUMEL = 2048


# ---------------------------------------------------------------------------------------------
# The shape model: an independent reading of the op rules of assembler/ops.py and of the
# language's rules for merges, templates, shared modules and references.


class Invalid(Exception):
    """Raised by the shape model for something the checker rejects too."""


_REQ = object()  # a required argument

#: The built-in ops' signatures: (name, default) in positional order; `_REQ` marks required.
SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "conv": (("out", _REQ), ("k", _REQ), ("stride", 1), ("pad", 0), ("groups", 1), ("bias", True)),
    "linear": (("out", _REQ), ("bias", True)),
    "batchnorm": (),
    "layernorm": (),
    "relu": (),
    "gelu": (),
    "sigmoid": (),
    "tanh": (),
    "softmax": (("dim", 0),),
    "maxpool": (("k", _REQ), ("stride", None), ("pad", 0)),
    "avgpool": (("k", _REQ), ("stride", None), ("pad", 0)),
    "gap": (),
    "flatten": (),
    "dropout": (("p", _REQ),),
    "identity": (),
    "upsample": (("scale", _REQ), ("mode", "nearest")),
    "proxy": (("c", _REQ), ("stride", 1)),
}
_FLOAT_ARGS = {("dropout", "p")}
_MERGES = ("add", "mul", "gate", "cat")


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
    """The output shape of built-in op `name` with bound arguments `a` on input shape `s`."""
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
    raise Invalid(f"unknown op '{name}'")


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
        if isinstance(src, ir.Call) and src.ref.parts in tuple((m,) for m in _MERGES):
            return self.merge(src, env, params, stack)
        raise Invalid(f"bad chain source {src!r}")

    def merge(self, call: ir.Call, env: dict, params: dict, stack: tuple) -> Shape:
        op = call.ref.parts[0]
        paths = [a.value for a in call.args if a.name is None]
        kwargs = {a.name: a.value for a in call.args if a.name is not None}
        if set(kwargs) - {"cat": {"dim"}, "gate": {"init"}}.get(op, set()) or len(paths) < 2:
            raise Invalid(f"bad arguments of '{op}'")
        shapes = [self.chain(p, env, params, stack) if isinstance(p, ir.Chain)
                  else self.source(p, env, params, stack) for p in paths]
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
            if e.ref.parts[0] in _MERGES or e.ref.parts == ("copy",):
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


def chain_reads(chain, with_in: bool = False) -> tuple[str, ...]:
    """The distinct outside names a network chain reads, in order of first appearance (and "in"
    for a template's input, when `with_in`)."""
    out: list[str] = []

    def walk(e):
        if isinstance(e, ir.Chain):
            walk(e.source)
        elif isinstance(e, ir.In) and with_in:
            if "in" not in out:
                out.append("in")
        elif isinstance(e, ir.Ref) and len(e.parts) == 1:
            if e.parts[0] not in out:
                out.append(e.parts[0])
        elif isinstance(e, ir.Call) and e.ref.parts[0] in _MERGES:
            for a in e.args:
                if a.name is None:
                    walk(a.value)

    walk(chain)
    return tuple(out)


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
            read |= {root(n) for n in chain_reads(c, with_in=True)}
    return [b.name for b in stmts if root(b.name) not in read]


def _refs(nodes):
    """Every `ir.Ref` and range start inside some IR nodes."""
    for node in nodes:
        if isinstance(node, ir.Range):
            yield node.start
        elif isinstance(node, ir.Ref):
            yield node
        elif isinstance(node, ir.Node):
            for name in type(node).model_fields:
                value = getattr(node, name)
                yield from _refs(value if isinstance(value, tuple) else (value,))


def _fits(s: Shape) -> bool:
    if len(s) == 3:
        return s[0] <= MAX_CHANNELS and s[1] <= MAX_SPATIAL and s[2] <= MAX_SPATIAL
    return math.prod(s) <= MAX_NUMEL


# ---------------------------------------------------------------------------------------------
# Names


_FIRST = string.ascii_lowercase + string.ascii_uppercase + "_"
_REST = string.ascii_lowercase + string.digits + "_" + string.ascii_uppercase


@st.composite
def names(draw) -> str:
    """A name of the language that is neither a keyword nor a built-in."""
    name = draw(st.sampled_from(_FIRST)) + draw(st.text(_REST, max_size=5))
    return name if name not in RESERVED else name + "_"


# ---------------------------------------------------------------------------------------------
# The generator


_ELEMENT_MODIFIERS = (None, None, None, None, "frozen", "trainable")
_BINDING_MODIFIERS = (None, None, None, None, "frozen", "trainable", "adapter")


def _lit(v) -> ir.Node:
    if isinstance(v, ir.Node):
        return v
    if isinstance(v, bool):
        return ir.Bool(value=v)
    if isinstance(v, (int, float)):
        return ir.Number(value=v)
    if isinstance(v, str):
        return ir.String(value=v)
    if isinstance(v, list):
        return ir.ListValue(items=tuple(_lit(x) for x in v))
    raise TypeError(v)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def _path_expr(source, elements) -> ir.Node:
    """A merge path as the parser builds it: a bare source, or a chain."""
    return ir.Chain(source=source, elements=tuple(elements)) if elements else source


@functools.lru_cache(maxsize=None)
def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class _Gen:
    def __init__(self, draw, max_bindings: int):
        self.draw = draw
        self.max_bindings = max_bindings
        self.t = Tracker()
        self.top: set[str] = set()  # template, shared and network names
        self.local: set[str] = set()  # every input, binding and parameter name used anywhere
        self.defs: list[ir.Node] = []  # templates and shared modules, in creation order
        self.networks: list[ir.Network] = []
        self.extra: list[ir.Node] = []  # matches and trains
        self.pstack: list[dict[str, Any]] = []  # parameters of the templates being generated
        self._tmpl_args: dict[str, dict[str, Any]] = {}  # template -> its arguments where it was made
        self._tmpl_scope: list[set[str]] = []  # local names of the templates being generated
        self.first_element = False  # the next element is a network's first one
        self.linked = False  # some network refers to another's bindings

    # -- draws -----------------------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        """True with probability p; shrinks to False."""
        return self.integer(0, 99) >= 100 - round(100 * p)

    def pick(self, seq):
        """One item of `seq`; shrinks to the first."""
        seq = list(seq)
        return seq[self.integer(0, len(seq) - 1)] if len(seq) > 1 else seq[0]

    def integer(self, lo: int, hi: int) -> int:
        return lo if lo == hi else self.draw(_integers(lo, hi))

    def boolean(self) -> bool:
        return self.draw(st.booleans())

    def floating(self, lo: float, hi: float, exclude_max: bool = False) -> float:
        return self.draw(st.floats(lo, hi, exclude_max=exclude_max, allow_nan=False, allow_infinity=False))

    def permutation(self, seq: list) -> list:
        return list(self.draw(st.permutations(seq)))

    def raw_name(self) -> str:
        return self.draw(names())

    # -- names -----------------------------------------------------------------------------------

    def _unique(self, base: str, taken: Callable[[str], bool]) -> str:
        name, i = base, 1
        while name in RESERVED or taken(name):
            name, i = f"{base}{i}", i + 1
        return name

    def top_name(self) -> str:
        name = self._unique(self.raw_name(), lambda n: n in self.top or n in self.local)
        self.top.add(name)
        return name

    def local_name(self, scope: set[str]) -> str:
        reusable = sorted(self.local - scope)
        if reusable and self.chance(0.25):  # the same name in another scope
            name = self.pick(reusable)
        else:
            name = self._unique(self.raw_name(), lambda n: n in self.top or n in scope)
        self.local.add(name)
        scope.add(name)
        return name

    # -- values and calls ------------------------------------------------------------------------

    def lit(self, v) -> ir.Node:
        """A literal argument; inside a template sometimes a parameter that holds the value."""
        if self.pstack and not isinstance(v, list) and self.chance(0.3):
            params = self.pstack[-1]
            same = [p for p, x in params.items() if _same(x, v)]
            if same and self.chance(0.6):
                return ir.Ref(parts=(self.pick(same),))
            if len(params) < 3:
                name = self.local_name(self._tmpl_scope[-1])
                params[name] = v
                return ir.Ref(parts=(name,))
        if isinstance(v, list):
            return ir.ListValue(items=tuple(self.lit(x) for x in v))
        return _lit(v)

    def call(self, name: str, sig, values: dict) -> ir.Ref | ir.Call:
        """`name(...)` with `values` given positionally, by keyword or left to their defaults."""
        present = []
        for pname, default in sig:
            v = values.get(pname, default)
            assert v is not _REQ, (name, pname)
            if v is None:
                continue
            if default is not _REQ and _same(v, default) and self.chance(0.6):
                continue
            present.append((pname, v))
        order = [p for p, _ in sig]
        run = 0
        while run < len(present) and order.index(present[run][0]) == run:
            run += 1
        npos = run - self.integer(0, run)
        keywords = self.permutation(present[npos:]) if len(present) - npos > 1 else present[npos:]
        args = tuple(ir.Arg(value=self.lit(v)) for _, v in present[:npos]) + tuple(
            ir.Arg(name=p, value=self.lit(v)) for p, v in keywords)
        if not args and not self.chance(0.1):
            return ir.Ref(parts=(name,))
        return ir.Call(ref=ir.Ref(parts=(name,)), args=args)

    def op(self, name: str, **values) -> ir.Ref | ir.Call:
        return self.call(name, SIGNATURES[name], values)

    def params_now(self) -> dict:
        return dict(self.pstack[-1]) if self.pstack else {}

    # -- ops ---------------------------------------------------------------------------------------

    def draw_op(self, s: Shape, preserve: bool = False) -> ir.Ref | ir.Call:
        """A built-in op valid on shape `s` (one that keeps `s` when `preserve`)."""
        image = len(s) == 3
        choices = ["relu", "batchnorm", "gelu", "sigmoid", "tanh", "identity", "dropout", "layernorm", "softmax"]
        if image:
            choices += ["conv"] * 4 + ["maxpool", "avgpool", "proxy", "upsample"]
            if not preserve:
                choices += ["gap", "gap", "flatten", "linear"]
        else:
            choices += ["linear"] * 3
            if not preserve:
                choices += ["flatten"]
        name = self.pick(choices)
        r = len(s)
        if name == "dropout":
            p = self.pick([0.5, 0.1, 0.0, 0, "any"])
            if p == "any":
                p = self.floating(0, 1, exclude_max=True)
            return self.op(name, p=p)
        if name == "softmax":
            return self.op(name, dim=self.integer(-r, r - 1))
        if name == "linear":
            return self.op(name, out=s[-1] if preserve else self.integer(1, 16), bias=self.boolean())
        if name == "flatten":
            return self.op(name) if math.prod(s) <= MAX_NUMEL else self.op("relu")
        if name in ("gap", "relu", "batchnorm", "gelu", "sigmoid", "tanh", "identity", "layernorm"):
            return self.op(name)
        c, h, w = s
        small = min(h, w)
        if name == "conv":
            groups = self.pick(_divisors(c))
            if preserve:
                k = self.pick([1, 3, 5])
                return self.op(name, out=c, k=k, pad=k // 2, groups=groups, bias=self.boolean())
            k = self.integer(1, 5)
            pad = self.integer(0, k // 2) if max(h, w) < MAX_SPATIAL else 0
            k = min(k, small + 2 * pad)
            out = groups * self.integer(1, max(1, 16 // groups))
            return self.op(name, out=out, k=k, stride=self.integer(1, 3), pad=pad, groups=groups,
                           bias=self.boolean())
        if name in ("maxpool", "avgpool"):
            if preserve:
                return self.op(name, k=3, stride=1, pad=1) if self.chance(0.5) else self.op(name, k=1)
            k = self.integer(1, 4)
            pad = self.integer(0, k // 2)
            k = min(k, small + 2 * pad)
            stride = None if self.chance(0.5) else self.integer(1, k)
            return self.op(name, k=k, stride=stride, pad=pad)
        if name == "proxy":
            if preserve:
                return self.op(name, c=c)
            stride = self.integer(1, 3)
            while stride > 1 and small + 2 * (stride // 2) < stride + 1:
                stride -= 1
            return self.op(name, c=self.integer(1, 16), stride=stride)
        # upsample
        scale = 1 if preserve or 2 * max(h, w) > MAX_SPATIAL else self.integer(1, 2)
        return self.op(name, scale=scale, mode=self.pick(["nearest", "bilinear"]))

    def adapt(self, f: Shape, t: Shape) -> list[ir.Element] | None:
        """Elements that turn shape `f` into shape `t`, or None when none are at hand."""
        el = lambda target: ir.Element(target=target)  # noqa: E731
        if f == t:
            return []
        if len(t) == 1:
            if len(f) == 1:
                return [el(self.op("linear", out=t[0]))]
            if len(f) == 3:
                if f[0] == t[0] and self.chance(0.5):
                    return [el(self.op("gap"))]
                if math.prod(f) <= MAX_NUMEL and self.chance(0.3):
                    return [el(self.op("flatten")), el(self.op("linear", out=t[0]))]
                return [el(self.op("gap")), el(self.op("linear", out=t[0]))]
            return None
        if len(t) != 3 or len(f) != 3:
            return None
        (fc, fh, fw), (tc, th, tw) = f, t
        if (fh, fw) == (th, tw):
            return [el(self.op("conv", out=tc, k=1) if self.chance(0.6) else self.op("proxy", c=tc))]
        if fh % th == 0 and fw % tw == 0 and fh // th == fw // tw:
            r = fh // th
            how = self.pick(["proxy", "conv", "maxpool", "avgpool"])
            if how == "proxy":
                return [el(self.op("proxy", c=tc, stride=r))]
            if how == "conv":
                return [el(self.op("conv", out=tc, k=1, stride=r))]
            out = [el(self.op(how, k=r))]
            return out + ([el(self.op("conv", out=tc, k=1))] if fc != tc else [])
        if th % fh == 0 and tw % fw == 0 and th // fh == tw // fw:
            out = [el(self.op("upsample", scale=th // fh, mode=self.pick(["nearest", "bilinear"])))]
            return out + ([el(self.op("conv", out=tc, k=1))] if fc != tc else [])
        return None

    # -- elements ----------------------------------------------------------------------------------

    def element(self, s: Shape, where: str, depth: int = 0, preserve: bool = False) -> tuple[ir.Element, Shape]:
        """One element valid on shape `s`. `where`: "net", "template" or "shared"."""
        kinds = ["op"] * 8
        if not preserve:
            if self.t.templates:
                kinds += ["template"] * 2
            if depth < 2:
                kinds += ["new_template"]
            usable = [n for n, (_, ins) in self.t.shared.items() if ins == s]
            if usable:
                kinds += ["shared"] * 5
            if where == "net":
                kinds += ["new_shared"]
            refs = self.ref_candidates(s)
            if refs:
                kinds += ["ref"] * 3 if where == "net" else ["ref"]
            if self.ref_candidates(s, copy=True):
                kinds += ["copy"] * 2
            if self.range_candidates(s):
                kinds += ["range"] * 2
        if self.first_element and where == "net" and not preserve:
            # A network's first element: often a module or binding that other networks use too.
            self.first_element = False
            linked = sorted(set(kinds) & {"shared", "new_shared", "ref", "copy", "range"})
            if linked and self.chance(0.6):
                kinds = ["shared"] if "shared" in linked and self.chance(0.5) else linked
        kind = self.pick(kinds)
        if kind in ("ref", "copy", "range"):
            self.linked = True
        target = None
        if kind == "template":
            target = self.use_template(s)
        elif kind == "new_template":
            target = self.new_template(s, depth)
        elif kind == "shared":
            usable = [n for n, (_, ins) in self.t.shared.items() if ins == s]
            name = self.pick(usable)
            target = ir.Ref(parts=(name,))
        elif kind == "new_shared":
            target = self.new_shared(s, depth)
        elif kind in ("ref", "copy"):
            net, b = self.pick(self.ref_candidates(s, copy=kind == "copy"))
            target = ir.Ref(parts=(net, b))
            if kind == "copy":
                target = ir.Call(ref=ir.Ref(parts=("copy",)), args=(ir.Arg(value=target),))
        elif kind == "range":
            net, a, b = self.pick(self.range_candidates(s))
            target = ir.Range(start=ir.Ref(parts=(net, a)), end=b)
            if self.chance(0.5):
                target = ir.Call(ref=ir.Ref(parts=("copy",)), args=(ir.Arg(value=target),))
        if target is None:
            target = self.draw_op(s, preserve)
        modifier = self.pick(_ELEMENT_MODIFIERS)
        if modifier == "trainable" and isinstance(target, ir.Ref) and len(target.parts) == 1 \
                and target.parts[0] in self.t.shared and self.t.shared[target.parts[0]][0].frozen:
            modifier = None  # `trainable` on a frozen shared module is an error
        el = ir.Element(target=target, modifier=modifier)
        out = self.t.element(el, s, self.params_now())  # raises if the generator is wrong
        if not _fits(out) or preserve and out != s:
            el = ir.Element(target=self.op("relu"), modifier=el.modifier)
            out = s
        return el, out

    def elements(self, s: Shape, where: str, depth: int, lo: int, hi: int) -> tuple[list[ir.Element], Shape]:
        els = []
        for _ in range(self.integer(lo, hi)):
            el, s = self.element(s, where, depth)
            els.append(el)
        return els, s

    def ref_candidates(self, s: Shape, copy: bool = False) -> list[tuple[str, str]]:
        """Bindings of finished networks usable as an element on shape `s`."""
        return [(n.name, b) for n in self.t.nets.values() for b, r in n.reads.items()
                if len(r) == 1 and n.shapes[r[0]] == s and not (copy and b in n.uses_shared)]

    def range_candidates(self, s: Shape) -> list[tuple[str, str, str]]:
        out = []
        for n in self.t.nets.values():
            for end, r in n.reads.items():
                path = [end]
                while True:
                    head = path[0]
                    r = n.reads[head]
                    if len(r) == 1 and n.shapes[r[0]] == s:
                        out.append((n.name, head, end))
                    if len(r) != 1 or r[0] not in n.reads:
                        break
                    path.insert(0, r[0])
        return out

    # -- templates -------------------------------------------------------------------------------

    def use_template(self, s: Shape) -> ir.Call | ir.Ref | None:
        """An instance of an existing template valid on `s`, or None."""
        block = self.t.templates[self.pick(sorted(self.t.templates))]
        sig = tuple((p.name, _REQ if p.default is None else self.t.value(p.default, {})) for p in block.params)
        orig = self._tmpl_args[block.name]
        for attempt in range(2):
            values = {}
            for pname, default in sig:
                v = orig[pname]
                if attempt == 0 and _is_int(v) and self.chance(0.5):
                    v = self.integer(1, 8)
                values[pname] = v
            target = self.call(block.name, sig, values)
            try:
                out = self.t.element(ir.Element(target=target), s, self.params_now())
            except Invalid:
                continue
            if _fits(out):
                return target
        return None

    def new_template(self, s: Shape, depth: int) -> ir.Call | ir.Ref:
        """A new template made for shape `s` (registered at the top), and its instance here."""
        name = self.top_name()
        self.pstack.append({})
        self._tmpl_scope.append(set())
        body = pipe = None
        if self.chance(0.5):
            els, _ = self.elements(s, "template", depth + 1, 1, 3)
            pipe = ir.Chain(source=None, elements=tuple(els))
        else:
            body = self.template_body(s, depth)
        params = self.pstack.pop()
        scope = self._tmpl_scope.pop()
        if self.chance(0.15):  # a parameter the template does not use
            params[self.local_name(scope)] = 1
        pnames = list(params)
        cut = self.integer(0, len(pnames))  # parameters from `cut` on get defaults
        ir_params = tuple(ir.Param(name=p, default=_lit(params[p]) if i >= cut else None)
                          for i, p in enumerate(pnames))
        block = ir.Block(name=name, params=ir_params, pipe=pipe, body=body,
                         has_parens=bool(ir_params) or self.chance(0.3))
        self.t.templates[name] = block
        self._tmpl_args[name] = params
        self.defs.append(block)
        sig = tuple((p.name, _REQ if p.default is None else params[p.name]) for p in ir_params)
        return self.call(name, sig, params)

    def template_body(self, s: Shape, depth: int) -> tuple:
        env: dict[str, Shape] = {"in": s}
        stmts = []
        for _ in range(self.integer(1, 3)):
            bname = self.local_name(self._tmpl_scope[-1])
            chain = self.chain(env, "template", depth + 1)
            env[bname] = self.t.chain(chain, env, self.params_now())
            stmts.append(ir.Binding(name=bname, chain=chain, modifier=self.pick(_BINDING_MODIFIERS)))
        safe = safe_returns(stmts)  # AVOIDED: template-result-read-inside
        ret = safe[-1] if self.chance(0.8) else self.pick(safe)
        return tuple(stmts) + (ir.Return(names=(ret,)),)

    # -- shared modules --------------------------------------------------------------------------

    def new_shared(self, s: Shape, depth: int) -> ir.Ref:
        name = self.top_name()
        els, _ = self.elements(s, "shared", depth + 1, 1, 2)
        sh = ir.Shared(name=name, pipe=ir.Chain(source=None, elements=tuple(els)), frozen=self.chance(0.3))
        self.t.shared[name] = (sh, s)
        self.defs.append(sh)
        return ir.Ref(parts=(name,))

    # -- chains and merges -------------------------------------------------------------------------

    def _src(self, name: str):
        return ir.In() if name == "in" else ir.Ref(parts=(name,))

    def chain(self, env: dict[str, Shape], where: str, depth: int = 0) -> ir.Chain:
        """A chain reading names of `env` ("in" is a template's input)."""
        if self.chance(0.3):
            source, s = self.merge(env, where, depth)
        else:
            order = list(env)[::-1]  # shrinks to the latest value
            name = self.pick(order)
            source, s = self._src(name), env[name]
        lo = 1 if where == "template" and isinstance(source, ir.In) and self.chance(0.8) else 0
        els, _ = self.elements(s, where, depth, lo, 4)
        return ir.Chain(source=source, elements=tuple(els))

    def path_to(self, env, target: Shape, where: str, depth: int, nested: bool = True) -> ir.Node:
        """A merge path (a bare name, a chain or a nested merge) whose shape is `target`."""
        if nested and depth < 1 and self.chance(0.1):
            return self.merge_to(env, target, where, depth + 1)
        fits = []
        for name, shape in env.items():
            els = self.adapt(shape, target)
            if els is not None:
                fits.append((name, els))
        name, els = self.pick(fits) if len(fits) > 1 else fits[0]
        els = list(els)
        for _ in range(self.integer(0, 2)):
            el, _s = self.element(target, where, depth + 1, preserve=True)
            els.append(el)
        return _path_expr(self._src(name), els)

    def merge_to(self, env, target: Shape, where: str, depth: int) -> ir.Call:
        """add/mul/gate with output shape `target`."""
        op = self.pick(["add", "mul", "gate"])
        n = self.integer(2, 3)
        paths = [self.path_to(env, target, where, depth) for _ in range(n)]
        return ir.Call(ref=ir.Ref(parts=(op,)), args=tuple(ir.Arg(value=p) for p in paths) + self.merge_kwargs(op, n))

    def merge_kwargs(self, op: str, n: int, dim: int | None = None, rank: int = 0) -> tuple:
        if op == "gate" and self.chance(0.5):
            init = [self.pick([2, -2, 0, 1.5, "float"]) for _ in range(n)]
            init = [self.floating(-8, 8) if v == "float" else v for v in init]
            return (ir.Arg(name="init", value=self.lit(init)),)
        if op == "cat" and (dim != 0 or self.chance(0.6)):
            d = dim - rank if self.chance(0.3) else dim  # the negative spelling
            return (ir.Arg(name="dim", value=self.lit(d)),)
        return ()

    def merge(self, env: dict[str, Shape], where: str, depth: int) -> tuple[ir.Call, Shape]:
        op = self.pick(["add", "gate", "cat", "mul"])
        base = self.pick(list(env)[::-1])
        t = env[base]
        n = self.integer(2, 3)
        if op != "cat":
            first = _path_expr(self._src(base), [])
            paths = [first] + [self.path_to(env, t, where, depth) for _ in range(n - 1)]
            call = ir.Call(ref=ir.Ref(parts=(op,)), args=tuple(ir.Arg(value=p) for p in paths) +
                           self.merge_kwargs(op, n))
        else:
            rank = len(t)
            dim = 0 if self.chance(0.7) else self.integer(0, rank - 1)
            targets = []
            for _ in range(n):
                if dim == 0 and self.chance(0.5):
                    targets.append((self.integer(1, 8),) + t[1:])
                else:
                    targets.append(t)
            out = list(t)
            out[dim] = sum(x[dim] for x in targets)
            if not _fits(tuple(out)):
                targets = [t[:dim] + (1,) + t[dim + 1:]] * n if dim == 0 else targets[:2]
            paths = [self.path_to(env, x, where, depth, nested=x == t) for x in targets]
            call = ir.Call(ref=ir.Ref(parts=("cat",)), args=tuple(ir.Arg(value=p) for p in paths) +
                           self.merge_kwargs("cat", len(paths), dim, rank))
        shape = self.t.merge(call, env, self.params_now(), ())
        if not _fits(shape):  # too big: fall back to adding the base to itself
            call = ir.Call(ref=ir.Ref(parts=("add",)), args=(ir.Arg(value=self._src(base)),) * 2)
            shape = t
        return call, shape

    # -- networks --------------------------------------------------------------------------------

    def input_shape(self) -> Shape:
        known = [s for n in self.t.nets.values() for s in n.inputs.values()]
        if known and self.chance(0.6):
            return self.pick(known)
        if self.chance(0.75):
            return (self.integer(1, 4), self.pick([8, 4, 16]), self.pick([8, 4, 16]))
        return (self.integer(1, 32),)

    def network(self) -> None:
        name = self.top_name()
        scope: set[str] = set()
        inputs = []
        for _ in range(2 if self.chance(0.2) else 1):
            inputs.append(ir.Input(name=self.local_name(scope), shape=self.input_shape()))
        env: dict[str, Shape] = {i.name: i.shape for i in inputs}
        reads: dict[str, tuple[str, ...]] = {}
        uses_shared: set[str] = set()
        body: list = []
        self.first_element = True
        for _ in range(self.integer(1, self.max_bindings)):
            bname = self.local_name(scope)
            chain = self.chain(env, "net")
            s = self.t.chain(chain, env, {})
            reads[bname] = chain_reads(chain)
            if self.t.uses_shared(chain):
                uses_shared.add(bname)
            env[bname] = s
            body.append(ir.Binding(name=bname, chain=chain, modifier=self.pick(_BINDING_MODIFIERS)))
        bindings = [b.name for b in body]
        ret = [bindings[-1]] if self.chance(0.7) else [self.pick(bindings)]
        if len(bindings) > 1 and self.chance(0.3):
            ret.append(self.pick([b for b in bindings if b != ret[0]]))
        skips = self.skips(inputs, env, reads) if self.chance(0.35) else None
        body.append(ir.Return(names=tuple(ret)))
        if skips is not None:
            body.insert(len(body) - (1 if self.chance(0.7) else 0), skips)
        self.networks.append(ir.Network(name=name, inputs=tuple(inputs), body=tuple(body)))
        self.t.nets[name] = NetInfo(name=name, inputs={i.name: i.shape for i in inputs}, shapes=env, reads=reads,
                                    uses_shared=uses_shared)

    def skips(self, inputs, env, reads) -> ir.Skips | None:
        k = self.pick([2, None, 1, 3])
        window = k or 3
        inames = {i.name for i in inputs}
        chosen: list[str] = []
        for name, s in env.items():
            if len(s) != 3 or name in inames and chosen:
                continue
            ok = all(env[p][1] % s[1] == 0 and env[p][2] % s[2] == 0 and env[p][1] // s[1] == env[p][2] // s[2]
                     for p in chosen[-window:])
            if ok and self.chance(0.8):
                chosen.append(name)
        if len(chosen) < 2:
            return None
        for l in range(1, len(chosen)):
            extra = tuple(p for p in chosen[max(0, l - window):l] if p not in reads[chosen[l]])
            reads[chosen[l]] = reads[chosen[l]] + extra
        args = () if k is None else (ir.Arg(name="k", value=ir.Number(value=k)),)
        if self.chance(0.4):
            args += (ir.Arg(name="proxy", value=ir.Ref(parts=(self.proxy_template(),))),)
        return ir.Skips(nodes=tuple(chosen), args=args)

    def proxy_template(self) -> str:
        """A template usable as the proxy of `skips`: (c, stride) -> [c, h / stride, w / stride]."""
        name = self.top_name()
        scope: set[str] = set()
        c, s = self.local_name(scope), self.local_name(scope)
        C, S = ir.Ref(parts=(c,)), ir.Ref(parts=(s,))
        kind = self.pick(["conv", "pool", "proxy"])
        if kind == "conv":
            els = [ir.Call(ref=ir.Ref(parts=("conv",)), args=(ir.Arg(value=C), ir.Arg(value=ir.Number(value=1)),
                                                                  ir.Arg(name="stride", value=S)))]
        elif kind == "pool":
            els = [ir.Call(ref=ir.Ref(parts=("maxpool",)), args=(ir.Arg(value=S),)),
                   ir.Call(ref=ir.Ref(parts=("conv",)), args=(ir.Arg(value=C), ir.Arg(value=ir.Number(value=1)),
                                                              ir.Arg(name="bias", value=ir.Bool(value=False)))),
                   ir.Ref(parts=("batchnorm",))]
        else:
            els = [ir.Call(ref=ir.Ref(parts=("proxy",)), args=(ir.Arg(value=C), ir.Arg(value=S)))]
        default = ir.Number(value=1) if self.chance(0.5) else None
        block = ir.Block(name=name, params=(ir.Param(name=c), ir.Param(name=s, default=default)),
                         pipe=ir.Chain(source=None, elements=tuple(ir.Element(target=e) for e in els)),
                         has_parens=True)
        self.t.templates[name] = block
        self._tmpl_args[name] = {c: 1, s: 1}
        self.defs.append(block)
        return name

    # -- matches and train sections ----------------------------------------------------------------

    def matches(self) -> None:
        """Sometimes a `match` statement between bindings of two networks."""
        points = [(n.name, b, n.shapes[b]) for n in self.t.nets.values() for b in n.reads]
        pairs = [(a, b) for a in points for b in points if a[0] != b[0]]
        equal = [(a, b) for a, b in pairs if a[2] == b[2]]
        maps = [(a, b) for a, b in pairs if len(a[2]) == 3 and len(b[2]) == 3]
        if not (equal or maps) or not self.chance(0.5):
            return
        ref = lambda p: ir.Ref(parts=p[:2])  # noqa: E731
        if equal and (not maps or self.chance(0.5)):
            chosen = [self.pick(equal)]
            if len(equal) > 1 and self.chance(0.3):
                chosen.append(self.pick(equal))
            self.extra.append(ir.Match(pairs=tuple(ir.Pair(source=ref(a), target=ref(b)) for a, b in chosen),
                                       weighting=ir.Ref(parts=("l2",))))
            return
        a, b = self.pick(maps)
        weighting = self.pick(["fitnet", "attention", "meta", "meta()"])
        w = ir.Ref(parts=(weighting,)) if weighting != "meta()" else ir.Call(
            ref=ir.Ref(parts=("meta",)), args=(ir.Arg(name="hidden", value=ir.Number(value=self.integer(0, 8))),))
        left = [a] + [p for p in points if p[0] == a[0] and len(p[2]) == 3 and p != a and self.chance(0.3)]
        if self.chance(0.5):
            self.extra.append(ir.Match(product=(tuple(ref(x) for x in left), (ref(b),)), weighting=w))
        else:
            self.extra.append(ir.Match(pairs=tuple(ir.Pair(source=ref(x), target=ref(b)) for x in left), weighting=w))

    def trains(self) -> None:
        for net in self.networks:
            if not self.chance(0.3):
                continue
            data = ir.Call(ref=ir.Ref(parts=("digits",)), args=(ir.Arg(name="split", value=ir.String(value="train")),))
            settings = [ir.Setting(key="procedure", value=ir.Ref(parts=("finetune",))),
                        ir.Setting(key="data", value=data),
                        ir.Setting(key="epochs", value=ir.Number(value=3))]
            if self.chance(0.3):
                settings.append(ir.Setting(key="optimizer", value=ir.Call(ref=ir.Ref(parts=("sgd",)), args=(
                    ir.Arg(name="lr", value=ir.Number(value=0.05)),
                    ir.Arg(name="momentum", value=ir.Number(value=0.9))))))
            if self.chance(0.2):
                settings.append(ir.Setting(key="batch", value=ir.Number(value=32)))
            if self.chance(0.2):
                settings.append(ir.Setting(key="seed", value=ir.Number(value=self.integer(0, 9))))
            self.extra.append(ir.Train(networks=(net.name,), settings=tuple(settings)))

    def definition_order(self, nets: list[ir.Network]) -> list[ir.Network]:
        """`nets` as close to their order as can be while every network comes after the networks
        that the templates and shared modules it uses refer to (AVOIDED: definition-refs-out-of-order)."""
        defs = {**self.t.templates, **{n: sh for n, (sh, _) in self.t.shared.items()}}
        memo: dict[str, set[str]] = {}

        def deps(name: str) -> set[str]:
            if name not in memo:
                memo[name] = set()
                for r in _refs([defs[name]]):
                    if len(r.parts) == 2 and r.parts[0] in self.t.nets:
                        memo[name].add(r.parts[0])
                    elif len(r.parts) == 1 and r.parts[0] in defs and r.parts[0] != name:
                        memo[name] |= deps(r.parts[0])
            return memo[name]

        after = {n.name: set().union(*[deps(r.parts[0]) for r in _refs([n]) if len(r.parts) == 1 and
                                        r.parts[0] in defs]) - {n.name} for n in nets}
        out: list[ir.Network] = []
        placed: set[str] = set()
        while len(out) < len(nets):
            net = next(n for n in nets if n.name not in placed and after[n.name] <= placed)
            out.append(net)
            placed.add(net.name)
        # The checker lowers networks in file order, moved only by the references in their bodies;
        # when that order breaks a constraint above, keep the order of generation.
        body = {n.name: {r.parts[0] for r in _refs([n]) if len(r.parts) == 2 and r.parts[0] in self.t.nets}
                for n in out}
        done: list[str] = []
        while len(done) < len(out):
            done.append(next(n.name for n in out if n.name not in done and body[n.name] <= set(done)))
        if any(done.index(m) > done.index(n) for n in after for m in after[n]):
            return sorted(nets, key=lambda n: list(self.t.nets).index(n.name))
        return out

    # -- the spec ----------------------------------------------------------------------------------

    def spec(self, n_networks: int) -> tuple[ir.Spec, dict[str, dict[str, Shape]]]:
        for _ in range(n_networks):
            self.network()
        self.matches()
        self.trains()
        nets = list(self.networks)
        # Networks that refer to ones defined below them (AVOIDED: definition-refs-out-of-order).
        if len(nets) > 1 and self.chance(0.6 if self.linked else 0.2):
            nets = nets[::-1] if self.chance(0.6) else self.permutation(nets)
            nets = self.definition_order(nets)
        items = list(self.defs) + nets + self.extra
        if self.chance(0.1):  # templates and shared modules after their uses
            items = nets + list(self.defs) + self.extra
        spec = ir.Spec(items=tuple(items))
        shapes = {n: dict(info.shapes) for n, info in self.t.nets.items()}
        return spec, shapes


# ---------------------------------------------------------------------------------------------
# Public strategies


def _check_sizes(min_networks: int, max_networks: int, max_bindings: int) -> None:
    if not 1 <= min_networks <= max_networks:
        raise ValueError("need 1 <= min_networks <= max_networks")
    if max_bindings < 1:
        raise ValueError("max_bindings must be at least 1")


@st.composite
def specs_with_shapes(draw, min_networks: int = 1, max_networks: int = 3, max_bindings: int = 8):
    """(spec, shapes): a valid spec and, per network, the shape of every input and binding."""
    _check_sizes(min_networks, max_networks, max_bindings)
    gen = _Gen(draw, max_bindings)
    return gen.spec(gen.integer(min_networks, max_networks))


class _RandomGen(_Gen):
    """The generator driven by `random.Random` instead of Hypothesis (no shrinking)."""

    def __init__(self, rng: random.Random, max_bindings: int):
        super().__init__(None, max_bindings)
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def boolean(self) -> bool:
        return self.rng.random() < 0.5

    def floating(self, lo: float, hi: float, exclude_max: bool = False) -> float:
        while True:
            v = self.rng.uniform(lo, hi)
            if not (exclude_max and v >= hi):
                return v

    def permutation(self, seq: list) -> list:
        out = list(seq)
        self.rng.shuffle(out)
        return out

    def raw_name(self) -> str:
        name = self.rng.choice(_FIRST) + "".join(self.rng.choice(_REST) for _ in range(self.rng.randint(0, 5)))
        return name if name not in RESERVED else name + "_"


def random_spec(seed: int, min_networks: int = 1, max_networks: int = 3,
                max_bindings: int = 8) -> tuple[ir.Spec, dict[str, dict[str, Shape]]]:
    """(spec, shapes) like `specs_with_shapes`, from a seed and without Hypothesis: for quick
    fuzzing loops, benchmarks and corpora. The same seed gives the same spec."""
    _check_sizes(min_networks, max_networks, max_bindings)
    gen = _RandomGen(random.Random(seed), max_bindings)
    return gen.spec(gen.integer(min_networks, max_networks))


def specs(min_networks: int = 1, max_networks: int = 3, max_bindings: int = 8) -> st.SearchStrategy[ir.Spec]:
    """Valid specs (syntax IR) with `min_networks`..`max_networks` networks."""
    return specs_with_shapes(min_networks, max_networks, max_bindings).map(lambda pair: pair[0])


def networks(max_bindings: int = 8) -> st.SearchStrategy[ir.Spec]:
    """Valid specs holding exactly one network (with the templates and shared modules it uses)."""
    return specs(1, 1, max_bindings)
