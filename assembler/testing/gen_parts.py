"""The spec generator's elements: ops (through the op table's samplers), shape adapters,
references, ranges, copies, templates and shared modules. A mixin of `generator._Gen`."""

from __future__ import annotations

import math
from .. import ir
from ..ops import ops
from .shapes import _REQ, Invalid, Shape, _is_int, safe_returns

MAX_CHANNELS = 32
MAX_SPATIAL = 32
MAX_NUMEL = 2048
_ELEMENT_MODIFIERS = (None, None, None, None, "frozen", "trainable")
_BINDING_MODIFIERS = (None, None, None, None, "frozen", "trainable", "adapter")


def fits(s: Shape) -> bool:
    """Whether a shape is small enough for generated networks to compile and run quickly."""
    if len(s) == 3:
        return s[0] <= MAX_CHANNELS and s[1] <= MAX_SPATIAL and s[2] <= MAX_SPATIAL
    return math.prod(s) <= MAX_NUMEL


def lit(v) -> ir.Node:
    """A literal as IR."""
    if isinstance(v, ir.Node):
        return v
    if isinstance(v, bool):
        return ir.Bool(value=v)
    if isinstance(v, (int, float)):
        return ir.Number(value=v)
    if isinstance(v, str):
        return ir.String(value=v)
    if isinstance(v, list):
        return ir.ListValue(items=tuple(lit(x) for x in v))
    raise TypeError(v)


class Parts:
    """Elements and definitions; needs the draws, names and `call` of `_Gen`."""

    max_channels, max_spatial, max_numel = MAX_CHANNELS, MAX_SPATIAL, MAX_NUMEL

    def draw_op(self, s: Shape, preserve: bool = False) -> ir.Ref | ir.Call:
        """An op of the table valid on shape `s` (one that keeps `s` when `preserve`), with
        arguments from its entry's `sample`; ops weigh as their entries say."""
        table = ops()
        order = sorted((n for n, op in table.items() if op.sample is not None),
                       key=lambda n: (len(table[n].args), n != "relu", n))  # shrinks towards relu
        candidates = [n for n in order for _ in range(table[n].weight)]
        while candidates:
            name = self.pick(candidates)
            values = table[name].sample(s, self, preserve)
            if values is not None:
                return self.op(name, **values)
            candidates = [c for c in candidates if c != name]
        return self.op("relu")

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
        kind = self.pick(self._element_kinds(s, where, depth, preserve))
        if kind in ("ref", "copy", "range"):
            self.linked = True
        target = self._target(kind, s, depth) or self.draw_op(s, preserve)
        modifier = self.pick(_ELEMENT_MODIFIERS)
        if modifier == "trainable" and isinstance(target, ir.Ref) and len(target.parts) == 1 \
                and target.parts[0] in self.t.shared and self.t.shared[target.parts[0]][0].frozen:
            modifier = None  # `trainable` on a frozen shared module is an error
        el = ir.Element(target=target, modifier=modifier)
        out = self.t.element(el, s, self.params_now())  # raises if the generator is wrong
        if not fits(out) or preserve and out != s:
            el = ir.Element(target=self.op("relu"), modifier=el.modifier)
            out = s
        return el, out

    def _element_kinds(self, s: Shape, where: str, depth: int, preserve: bool) -> list[str]:
        """The kinds of element possible here, repeated by how often to draw them."""
        kinds = ["op"] * 8
        if not preserve:
            kinds += ["template"] * 2 * bool(self.t.templates) + ["new_template"] * (depth < 2)
            kinds += ["shared"] * 5 * any(ins == s for _, ins in self.t.shared.values())
            kinds += ["new_shared"] * (where == "net")
            if self.ref_candidates(s):
                kinds += ["ref"] * 3 if where == "net" else ["ref"]
            kinds += ["copy"] * 2 * bool(self.ref_candidates(s, copy=True))
            kinds += ["range"] * 2 * bool(self.range_candidates(s))
        if self.first_element and where == "net" and not preserve:
            # A network's first element: often a module or binding that other networks use too.
            self.first_element = False
            linked = sorted(set(kinds) & {"shared", "new_shared", "ref", "copy", "range"})
            if linked and self.chance(0.6):
                kinds = ["shared"] if "shared" in linked and self.chance(0.5) else linked
        return kinds

    def _target(self, kind: str, s: Shape, depth: int):
        """The target of an element of `kind` on shape `s` (None: draw an op instead)."""
        if kind == "template":
            return self.use_template(s)
        if kind == "new_template":
            return self.new_template(s, depth)
        if kind == "shared":
            return ir.Ref(parts=(self.pick([n for n, (_, ins) in self.t.shared.items() if ins == s]),))
        if kind == "new_shared":
            return self.new_shared(s, depth)
        if kind in ("ref", "copy"):
            net, b = self.pick(self.ref_candidates(s, copy=kind == "copy"))
            target = ir.Ref(parts=(net, b))
            return ir.Call(ref=ir.Ref(parts=("copy",)), args=(ir.Arg(value=target),)) if kind == "copy" else target
        if kind == "range":
            net, a, b = self.pick(self.range_candidates(s))
            target = ir.Range(start=ir.Ref(parts=(net, a)), end=b)
            return ir.Call(ref=ir.Ref(parts=("copy",)), args=(ir.Arg(value=target),)) if self.chance(0.5) else target
        return None

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
            if fits(out):
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
        ir_params = tuple(ir.Param(name=p, default=lit(params[p]) if i >= cut else None)
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
