"""Lowering: one network's bindings -> a graph of ops with shapes, counts, modules and roles.

Resolves every name a chain uses (inputs, bindings, ops, merges, templates, shared modules,
references to other networks' bindings, ranges, `copy(...)`), infers shapes through the op
table and decides what is trainable. Errors are collected per binding, so independent
mistakes in one network are all reported. Templates and shared modules are instantiated in
`lower_blocks.py`; references, ranges and copies are spliced in `lower_refs.py`; merges
(`add`, `cat`, `gate`, ...) are lowered in `lower_merges.py`.

`lower_network(net, scope)` is a pure function of its arguments: it returns the network, the
modules it declares and its diagnostics, and changes nothing it was given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import ir, lower_blocks, lower_merges, lower_refs
from .errors import Diagnostic, diagnostic, did_you_mean, listing, word_span
from .graph import CheckedNetwork, GraphNode, Module
from .ir import make
from .keys import ModuleKey
from .ops import OpError, merges, ops
from .parser import KEYWORDS
from .scope import Fail, Imported, Limits, Scope, fail, name_problem, python_reserved

__all__ = ["Fail", "Imported", "Lowered", "Scope", "fail", "lower_network", "name_problem", "python_reserved"]

DEFAULT_LIMITS = Limits()


class Lowered(NamedTuple):
    network: CheckedNetwork
    modules: dict[str, Module]  # the modules this network declared (shared ones included)
    diags: list[Diagnostic]


def lower_network(net: ir.Network, scope: Scope) -> Lowered:
    """Lower one network (its `skips` already expanded) in `scope`."""
    lw = Lowerer(net, scope)
    checked = lw.run()
    return Lowered(checked, lw.modules, lw.diags)


@dataclass
class Ctx:
    """Where a chain is being lowered: its binding, module path and defaults."""

    binding: str
    path: str  # module path prefix without the network, e.g. "c2" or "f.0.a"
    modifier: str | None = None  # the binding's or an enclosing element's frozen/trainable
    role: str = "layer"
    env: dict[str, str | None] = field(default_factory=dict)  # name -> node (None: failed)
    params: dict[str, Any] = field(default_factory=dict)  # template parameters in scope
    in_node: str | None = None
    templates: tuple[str, ...] = ()  # templates and shared modules being instantiated (recursion guard)

    def but(self, **kw) -> "Ctx":
        return Ctx(**{**self.__dict__, **kw})


class Lowerer:
    """Lowers one network: nodes, bindings, chains, merges and op elements. Use
    `lower_network(net, scope)`."""

    def __init__(self, net: ir.Network, scope: Scope):
        self.net = net
        self.scope = scope
        self.limits = scope.limits or DEFAULT_LIMITS
        self.nodes: dict[str, dict] = {}
        self.read: set[str] = set()  # nodes that some node reads
        self.counter: dict[str, int] = {}
        self.diags: list[Diagnostic] = []
        self.modules: dict[str, Module] = {}  # declared by this network
        self.reserved = {s.name for s in net.body if isinstance(s, ir.Binding)} | {i.name for i in net.inputs}
        self.later: dict[str, ir.Span | None] = {}  # binding -> where it is defined

    # -- nodes and modules ---------------------------------------------------------------------

    def fresh(self, binding: str) -> str:
        k = self.counter.get(binding, 0)
        while True:
            name = f"{binding}_{k}"
            k += 1
            if name not in self.nodes and name not in self.reserved:
                self.counter[binding] = k
                return name

    def add(self, ctx: Ctx, op: str, inputs: tuple[str, ...], shape, *, args=None, module=None,
            trainable=False, role="layer", params=0, flops=0, span=None) -> str:
        if math.prod(shape) > self.limits.activation:
            raise fail(f"this value would hold {math.prod(shape):,} numbers per sample ({list(shape)}), more than "
                       f"the limit of {self.limits.activation:,}", span,
                       hint="make it smaller, or raise the limit (--max-activation, ASSEMBLER_MAX_ACTIVATION)")
        name = self.fresh(ctx.binding)
        self.read.update(inputs)
        self.nodes[name] = dict(name=name, op=op, args=args or {}, inputs=inputs, shape=tuple(shape),
                                binding=ctx.binding, module=module, trainable=trainable, role=role,
                                params=params, flops=flops, span=span)
        return name

    def shape(self, node: str) -> tuple[int, ...]:
        return self.nodes[node]["shape"]

    def module(self, key: str) -> Module | None:
        """A module declared by this network or before it."""
        return self.modules.get(key) or self.scope.modules.get(key)

    def declare(self, path: str, op: str, args, in_shape, trainable, role, params, span=None, **extra) -> ModuleKey:
        if params > self.limits.params:
            raise fail(f"this module would have {params:,} parameters, more than the limit of "
                       f"{self.limits.params:,}", span,
                       hint="make it smaller, or raise the limit (--max-params, ASSEMBLER_MAX_PARAMS)")
        key = ModuleKey(f"{self.net.name}.{path}")
        self.modules[key] = make(Module, key=key, op=op, args=dict(args), in_shape=tuple(in_shape),
                                 trainable=trainable, role=role, params=params, init_from=extra.get("init_from"),
                                 imported_from=extra.get("imported_from"), origin=extra.get("origin"))
        return key

    def trainable(self, ctx: Ctx, default: bool = True) -> bool:
        if ctx.modifier == "frozen":
            return False
        if ctx.modifier == "trainable":
            return True
        return default

    # -- network ---------------------------------------------------------------------------------

    def run(self) -> CheckedNetwork:
        net = self.net
        for s in net.body:
            if isinstance(s, ir.Binding) and s.name not in self.later:
                self.later[s.name] = s.span
        env = self._inputs()
        outputs: tuple[str, ...] = ()
        returns = [s for s in net.body if isinstance(s, ir.Return)]
        for stmt in net.body:
            if isinstance(stmt, ir.Binding):
                self._binding(stmt, env)
            elif isinstance(stmt, ir.Skips):
                self.diags.append(diagnostic("'skips' must be expanded before lowering", stmt.span))
            elif stmt is returns[0]:
                outputs = self._return(stmt, env)
            else:
                self.diags.append(diagnostic(f"network '{net.name}' has more than one 'return'", stmt.span,
                                             width=len("return"),
                                             hint="return several values with one statement: return a, b"))
        self._check_return_place(returns)
        nodes = tuple(make(GraphNode, **n) for n in self.nodes.values())
        bindings = {k: v for k, v in env.items() if v is not None}
        return CheckedNetwork.model_construct(
            name=net.name, inputs={i.name: i.shape for i in net.inputs}, outputs=outputs, nodes=nodes,
            bindings=bindings, span=net.span, failed=tuple(k for k, v in env.items() if v is None))

    def _inputs(self) -> dict[str, str | None]:
        env: dict[str, str | None] = {}
        for inp in self.net.inputs:
            if inp.name in env:
                self.diags.append(diagnostic(f"duplicate input '{inp.name}'", inp.span))
                continue
            self._check_name(inp.name, inp.span, "an input")
            if math.prod(inp.shape) > self.limits.activation:
                self.diags.append(diagnostic(
                    f"input '{inp.name}' would hold {math.prod(inp.shape):,} numbers per sample, more than the limit "
                    f"of {self.limits.activation:,}", inp.span,
                    hint="make it smaller, or raise the limit (--max-activation, ASSEMBLER_MAX_ACTIVATION)"))
                env[inp.name] = None  # its readers fail silently
                continue
            self.nodes[inp.name] = dict(name=inp.name, op="input", args={}, inputs=(), shape=inp.shape,
                                        binding=inp.name, module=None, trainable=False, role="input",
                                        params=0, flops=0, span=inp.span)
            env[inp.name] = inp.name
        return env

    def _check_return_place(self, returns: list[ir.Return]) -> None:
        net = self.net
        if returns and net.body[-1] is not returns[0] and len(returns) == 1:
            self.diags.append(diagnostic("'return' must be the last statement of a network", returns[0].span,
                                         width=len("return"), hint="move the bindings after it before it"))
        if not returns:
            self.diags.append(diagnostic(f"network '{net.name}' has no 'return'", net.span, width=len("network"),
                                         hint="end its body with 'return NAME' naming the output binding"))

    def _check_name(self, name: str, span, what: str) -> None:
        problem = name_problem(name, what)
        if problem:
            self.diags.append(diagnostic(problem[0], span, hint=problem[1]))

    def _binding(self, b: ir.Binding, env: dict) -> None:
        if b.name in env or b.name in KEYWORDS or b.name in python_reserved():  # (locating costs a text scan)
            at = word_span(b.span, b.name, self.scope.text, len(b.modifier) + 1 if b.modifier else 0)
            if b.name in env:
                first = self.nodes.get(env[b.name] or "", {}).get("span")
                where = f" (first defined on line {first.line})" if first else ""
                self.diags.append(diagnostic(f"duplicate name '{b.name}'{where}", at,
                                             hint="each binding of a network needs its own name"))
                return
            self._check_name(b.name, at, "a binding")
        mod = b.modifier if b.modifier in ("frozen", "trainable") else None
        role = "adapter" if b.modifier == "adapter" else "layer"
        ctx = Ctx(binding=b.name, path=b.name, modifier=mod, role=role, env=env)
        try:
            known = len(self.nodes)
            node = self.chain(b.chain, ctx)
            if len(self.nodes) == known or node in self.read:  # an alias, or a value read inside its binding
                node = self.add(ctx, "identity", (node,), self.shape(node), span=b.chain.span)
            self._rename(node, b.name)
            env[b.name] = b.name
        except Fail as f:
            self.diags.extend(f.diags)
            env[b.name] = None

    def _rename(self, node: str, name: str) -> None:
        if node == name:
            return
        data = self.nodes.pop(node)
        data["name"] = name
        self.nodes[name] = data  # the last node has no readers yet

    def _return(self, stmt: ir.Return, env: dict) -> tuple[str, ...]:
        out = []
        for name in stmt.names:
            if name not in env:
                self.diags.append(self.undefined(name, word_span(stmt.span, name, self.scope.text, len("return")),
                                                 env))
            elif env[name] is not None:
                out.append(env[name])
        return tuple(out)

    def undefined(self, name: str, span, env: dict) -> Diagnostic:
        if name in self.later:
            return diagnostic(f"'{name}' is used before its definition on line {self.later[name].line}", span,
                              hint="define bindings before the chains that read them")
        return diagnostic(f"undefined name '{name}'", span, hint=did_you_mean(name, env) or (
            f"the inputs and bindings defined so far are: {listing(env)}" if env else None))

    # -- chains ----------------------------------------------------------------------------------

    def chain(self, chain: ir.Chain, ctx: Ctx) -> str:
        i = -1
        try:
            cur = self.source(chain.source, ctx)
            for i, el in enumerate(chain.elements):
                cur = self.element(el, cur, ctx.but(path=f"{ctx.path}.{i}"))
        except Fail as f:  # the rest of the chain has no shapes, but its names can still be wrong
            raise Fail(*f.diags, *self._unknown_names(chain.elements[i + 1:], ctx)) from None
        return cur

    def _unknown_names(self, elements, ctx: Ctx) -> list[Diagnostic]:
        """Unknown ops among elements that cannot be lowered (an earlier one failed)."""
        out = []
        for el in elements:
            ref = el.target.ref if isinstance(el.target, ir.Call) else el.target
            if not isinstance(ref, ir.Ref) or len(ref.parts) != 1:
                continue
            name = ref.parts[0]
            known = (ops(), merges(), self.scope.blocks, self.scope.shared, self.scope.imports, self.scope.failed,
                     self.scope.network_names, ctx.env, self.later, ctx.params, ("copy",))
            if not any(name in k for k in known):
                out += self._not_an_op(name, ref, el.target, ctx).diags
        return out

    def source(self, src, ctx: Ctx) -> str:
        if isinstance(src, ir.Chain):
            return self.chain(src, ctx)
        if isinstance(src, ir.In):
            if ctx.in_node is None:
                raise fail("'in' names a template's input and is only valid inside a 'block { ... }' body", src.span)
            return ctx.in_node
        if isinstance(src, ir.Ref) and len(src.parts) == 1:
            return self._read(src, ctx)
        if isinstance(src, ir.Call) and len(src.ref.parts) == 1 and src.ref.parts[0] in merges():
            return lower_merges.merge(self, src, ctx)
        if isinstance(src, (ir.Ref, ir.Range)):
            raise fail(f"a chain starts with an input, a binding or a merge, not the reference '{src.dotted}'",
                       src.span, hint=f"apply it to a value: x -> {src.dotted}")
        if isinstance(src, ir.Call):
            raise lower_merges.not_a_merge(self, src)
        raise fail(f"a chain starts with an input, a binding or a merge, not {_describe(src)}", src.span)

    def _read(self, src: ir.Ref, ctx: Ctx) -> str:
        name = src.parts[0]
        if name in ctx.env:
            if ctx.env[name] is None:
                raise Fail()  # its own error was reported
            return ctx.env[name]
        what = self._kind_of(name)
        if what:
            raise fail(f"a chain starts with an input, a binding or a merge; '{name}' is {what}", src.span,
                       hint=f"apply it to a value: x -> {name}")
        raise Fail(self.undefined(name, src.span, ctx.env))

    def _kind_of(self, name: str) -> str | None:
        if name in ops():
            return "an op"
        if name in self.scope.blocks:
            return "a template"
        if name in self.scope.shared:
            return "a shared module"
        if name in merges():
            return "a merge"
        return None

    # -- elements --------------------------------------------------------------------------------

    def element(self, el: ir.Element, cur: str, ctx: Ctx) -> str:
        if el.modifier:
            ctx = ctx.but(modifier=el.modifier)
        t = el.target
        if isinstance(t, ir.Range):
            return lower_refs.reference(self, t, cur, ctx, el)
        ref = t.ref if isinstance(t, ir.Call) else t
        args = t.args if isinstance(t, ir.Call) else None
        if len(ref.parts) > 1:
            if args is not None:
                raise fail(f"'{ref.dotted}' is a reference and takes no arguments", t.span)
            return lower_refs.reference(self, ref, cur, ctx, el)
        name = ref.parts[0]
        if name == "copy":
            return lower_refs.copy(self, t, cur, ctx, el)
        if name in self.scope.blocks:
            return lower_blocks.template(self, self.scope.blocks[name], args or (), cur, ctx, t)
        if name in self.scope.shared:
            if args is not None:
                raise fail(f"shared module '{name}' takes no arguments", t.span)
            return lower_blocks.shared(self, self.scope.shared[name], cur, ctx, el)
        if name in ops():
            return self.op(name, args or (), cur, ctx, t)
        raise self._not_an_op(name, ref, t, ctx)

    def _not_an_op(self, name: str, ref: ir.Ref, t, ctx: Ctx) -> Fail:
        if name in merges():
            return fail(f"'{name}' is a merge and starts a chain: {name}(a, b)", t.span)
        if name in self.scope.imports or name in self.scope.failed:
            return fail(f"'{name}' is an import, not an op", t.span, hint=f"use one of its bindings: {name}.BINDING")
        if name in self.scope.network_names:
            return fail(f"'{name}' is a network, not an op", t.span, hint=f"use one of its bindings: {name}.BINDING")
        if name in ctx.env or name in self.later:
            return fail(f"'{name}' is a binding of this network, not an op", t.span,
                        hint=f"a chain reads a binding at its start: {name} -> ...")
        if name in ctx.params:
            return fail(f"'{name}' is a parameter of the template, not an op", t.span)
        choices = list(ops()) + list(self.scope.blocks) + list(self.scope.shared) + ["copy"]
        return fail(f"unknown op '{name}'", ref.span, hint=did_you_mean(name, choices))

    def value(self, expr, ctx: Ctx):
        """A literal argument value, with template parameters substituted."""
        if isinstance(expr, (ir.Number, ir.String, ir.Bool)):
            return expr.value
        if isinstance(expr, ir.ListValue):
            return [self.value(v, ctx) for v in expr.items]
        if isinstance(expr, ir.Ref) and len(expr.parts) == 1 and expr.parts[0] in ctx.params:
            return ctx.params[expr.parts[0]]
        if isinstance(expr, ir.Ref):
            raise fail(f"'{expr.dotted}' is not a value here", expr.span,
                       hint="arguments are numbers, strings, true/false, lists or a template's parameters")
        raise fail(f"expected a value, got {_describe(expr)}", expr.span,
                   hint="arguments are numbers, strings, true/false, lists or a template's parameters")

    def arguments(self, args, ctx: Ctx) -> tuple[list, dict, dict]:
        """Call arguments as (positional values, keyword values, keyword spans)."""
        positional, keywords, spans = [], {}, {}
        for a in args:
            v = self.value(a.value, ctx)
            if a.name is None:
                if keywords:
                    raise fail("a positional argument follows a keyword argument", a.span)
                positional.append(v)
            else:
                if a.name in keywords:
                    raise fail(f"argument '{a.name}' is given twice", a.span)
                keywords[a.name] = v
                spans[a.name] = a.span
        return positional, keywords, spans

    def op(self, name: str, args, cur: str, ctx: Ctx, at) -> str:
        op = ops()[name]
        positional, keywords, spans = self.arguments(args, ctx)
        in_shape = self.shape(cur)
        try:
            bound = op.bind(positional, keywords)
            out = op.infer(in_shape, bound)
            params, flops = op.count(in_shape, bound, out)
        except OpError as e:
            span = spans.get(e.arg, None) if e.arg else None
            if span is None and e.arg:
                span = next((a.span for a, n in zip(args, [x.name for x in op.args]) if a.name is None and n == e.arg),
                            None)
            raise fail(str(e), span or at.span, hint=e.hint) from None
        trainable = self.trainable(ctx) if op.module else False
        role = op.role if op.role and ctx.role == "layer" else ctx.role
        module = self.declare(ctx.path, name, bound, in_shape, trainable, role, params, at.span) if op.module else None
        return self.add(ctx, name, (cur,), out, args=bound, module=module, trainable=trainable, role=role,
                        params=params, flops=flops, span=at.span)


def _describe(expr) -> str:
    return {ir.Number: "a number", ir.String: "a string", ir.Bool: "true/false", ir.ListValue: "a list",
            ir.Chain: "a chain", ir.In: "'in'", ir.Range: "a range", ir.Call: "a call"}.get(type(expr), "this")
