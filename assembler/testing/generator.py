"""The spec generator behind `assembler.testing.strategies`: draws a valid spec construct by
construct, tracking shapes with its own model (shapes.py), so that every spec checks. Ops,
merges and weightings come from their tables, with the samplers their entries provide.
"""

from __future__ import annotations

import functools
import random
import string
from typing import Any, Callable

from hypothesis import strategies as st

from .. import ir
from ..ops import builtin_names, merges
from ..parser import KEYWORDS
from ..scope import python_reserved
from ..visit import distinct_reads, references, walk
from ..weightings import WEIGHTINGS
from .gen_parts import _BINDING_MODIFIERS, Parts, fits, lit
from .shapes import _REQ, SIGNATURES, NetInfo, Shape, Tracker

#: Names a generated spec never uses for a template, shared module, network, input, binding
#: or parameter: the language's keywords, the built-in op, merge and special names and the
#: names compiled networks reserve (ops registered later are avoided too: see `reserved`).
RESERVED: frozenset[str] = frozenset(KEYWORDS) | builtin_names() | python_reserved()


def reserved(name: str) -> bool:
    """Whether a generated spec must not use `name` (the op table as it is now included)."""
    return name in RESERVED or name in builtin_names()

_FIRST = string.ascii_lowercase + string.ascii_uppercase + "_"
_REST = string.ascii_lowercase + string.digits + "_" + string.ascii_uppercase


@st.composite
def names(draw) -> str:
    """A name of the language that is neither a keyword nor a built-in."""
    name = draw(st.sampled_from(_FIRST)) + draw(st.text(_REST, max_size=5))
    return name if not reserved(name) else name + "_"


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def _path_expr(source, elements) -> ir.Node:
    """A merge path as the parser builds it: a bare source, or a chain."""
    return ir.Chain(source=source, elements=tuple(elements)) if elements else source


def _refs(node):
    """Every reference (single names too) inside an IR node, range starts included."""
    return (n for n in walk(node) if isinstance(n, ir.Ref))


@functools.lru_cache(maxsize=None)
def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


class _Gen(Parts):
    """Generates one valid spec through `draw` (Hypothesis' draw function), with its shapes."""

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
        while reserved(name) or taken(name):
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
        return lit(v)

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
        """A merge of equal paths (add, mul, gate, ...) with output shape `target`."""
        op = self.pick([m.name for m in merges().values() if m.paths == "equal"])
        n = self.integer(2, 3)
        paths = [self.path_to(env, target, where, depth) for _ in range(n)]
        return ir.Call(ref=ir.Ref(parts=(op,)), args=tuple(ir.Arg(value=p) for p in paths) +
                       self.merge_kwargs(op, n, target))

    def merge_kwargs(self, op: str, n: int, shape: Shape, dim: int | None = None) -> tuple:
        """The options of a merge of n paths: a concatenation's `dim` (sometimes left out when 0,
        sometimes spelt negative), else what the merge's entry samples."""
        merge = merges()[op]
        if merge.paths == "concat":
            if dim == 0 and not self.chance(0.6):
                return ()
            d = dim - len(shape) if self.chance(0.3) else dim  # the negative spelling
            return (ir.Arg(name="dim", value=self.lit(d)),)
        values = merge.sample(n, shape, self) if merge.sample is not None else {}
        return tuple(ir.Arg(name=k, value=self.lit(v)) for k, v in values.items())

    def merge(self, env: dict[str, Shape], where: str, depth: int) -> tuple[ir.Call, Shape]:
        op = self.pick(list(merges()))
        base = self.pick(list(env)[::-1])
        t = env[base]
        n = self.integer(2, 3)
        if merges()[op].paths != "concat":
            first = _path_expr(self._src(base), [])
            paths = [first] + [self.path_to(env, t, where, depth) for _ in range(n - 1)]
            call = ir.Call(ref=ir.Ref(parts=(op,)), args=tuple(ir.Arg(value=p) for p in paths) +
                           self.merge_kwargs(op, n, t))
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
            if not fits(tuple(out)):
                targets = [t[:dim] + (1,) + t[dim + 1:]] * n if dim == 0 else targets[:2]
            paths = [self.path_to(env, x, where, depth, nested=x == t) for x in targets]
            call = ir.Call(ref=ir.Ref(parts=(op,)), args=tuple(ir.Arg(value=p) for p in paths) +
                           self.merge_kwargs(op, len(paths), t, dim))
        shape = self.t.merge(call, env, self.params_now(), ())
        if not fits(shape):  # too big: fall back to adding the base to itself
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
            reads[bname] = distinct_reads(chain)
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
        by_shapes = {kind: [w for w in WEIGHTINGS.values() if w.shapes == kind] for kind in ("equal", "maps")}
        if equal and by_shapes["equal"] and (not maps or self.chance(0.5)):
            chosen = [self.pick(equal)]
            if len(equal) > 1 and self.chance(0.3):
                chosen.append(self.pick(equal))
            self.extra.append(ir.Match(pairs=tuple(ir.Pair(source=ref(a), target=ref(b)) for a, b in chosen),
                                       weighting=self.weighting(by_shapes["equal"])))
            return
        if not maps or not by_shapes["maps"]:
            return
        a, b = self.pick(maps)
        w = self.weighting(by_shapes["maps"])
        left = [a] + [p for p in points if p[0] == a[0] and len(p[2]) == 3 and p != a and self.chance(0.3)]
        if self.chance(0.5):
            self.extra.append(ir.Match(product=(tuple(ref(x) for x in left), (ref(b),)), weighting=w))
        else:
            self.extra.append(ir.Match(pairs=tuple(ir.Pair(source=ref(x), target=ref(b)) for x in left), weighting=w))

    def weighting(self, choices) -> ir.Ref | ir.Call:
        """A weighting of the table, its options sometimes written (flags true or false, whole
        numbers 0-8)."""
        w = self.pick(choices)
        if not w.args or not self.chance(0.3):
            return ir.Ref(parts=(w.name,))
        value = lambda a: ir.Bool(value=self.boolean()) if a.kind is bool else ir.Number(value=self.integer(0, 8))  # noqa: E731
        return ir.Call(ref=ir.Ref(parts=(w.name,)), args=tuple(
            ir.Arg(name=a.name, value=value(a)) for a in w.args if self.chance(0.7)))

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
                for r in _refs(defs[name]):
                    if len(r.parts) == 2 and r.parts[0] in self.t.nets:
                        memo[name].add(r.parts[0])
                    elif len(r.parts) == 1 and r.parts[0] in defs and r.parts[0] != name:
                        memo[name] |= deps(r.parts[0])
            return memo[name]

        after = {n.name: set().union(*[deps(r.parts[0]) for r in _refs(n) if len(r.parts) == 1 and
                                        r.parts[0] in defs]) - {n.name} for n in nets}
        out: list[ir.Network] = []
        placed: set[str] = set()
        while len(out) < len(nets):
            net = next(n for n in nets if n.name not in placed and after[n.name] <= placed)
            out.append(net)
            placed.add(net.name)
        # The checker lowers networks in file order, moved only by the references in their bodies;
        # when that order breaks a constraint above, keep the order of generation.
        body = {n.name: {r.parts[0] for r in references(n) if len(r.parts) == 2 and r.parts[0] in self.t.nets}
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
        return name if not reserved(name) else name + "_"
