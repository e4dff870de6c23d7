"""Lowering: one network's bindings -> a graph of ops with shapes, counts, modules and roles.

Resolves every name a chain uses (inputs, bindings, ops, templates, shared modules,
references to other networks' bindings, ranges, `copy(...)`), instantiates templates,
infers shapes through the op table and decides what is trainable. Errors are collected per
binding, so independent mistakes in one network are all reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from . import ir
from .errors import Diagnostic, diagnostic, did_you_mean, word_span
from .graph import CheckedNetwork, GraphNode, Module
from .ops import MERGES, OpError, ops
from .parser import KEYWORDS


class Fail(Exception):
    """Stops lowering one binding; carries its diagnostics (none: an earlier error explains it)."""

    def __init__(self, *diags: Diagnostic):
        super().__init__(*(d.message for d in diags))
        self.diags = list(diags)


def fail(message: str, span, hint: str | None = None, width: int | None = None) -> Fail:
    return Fail(diagnostic(message, span, hint=hint, width=width))


@dataclass
class Scope:
    """What names mean outside the network being lowered (built by resolve.py)."""

    blocks: dict[str, ir.Block]
    shared: dict[str, ir.Shared]
    # `NAME.` -> a lowered network to take bindings from: same-file networks and imports
    networks: dict[str, CheckedNetwork]
    imports: dict[str, "Imported"]
    modules: dict[str, Module]  # every module declared so far (shared ones across networks)
    failed: set[str] = field(default_factory=set)  # imports and networks with errors of their own
    text: str | None = None  # the spec's source, to point carets at names
    network_names: frozenset[str] = frozenset()  # every network of the spec, lowered or not


@dataclass
class Imported:
    alias: str
    path: str
    networks: dict[str, CheckedNetwork]
    modules: dict[str, Module]
    single: str | None  # the network's name when the file holds exactly one

    def key(self, key: str) -> str:
        """The importer's key for a module key of the imported spec."""
        if self.single and key.startswith(self.single + "."):
            key = key[len(self.single) + 1:]
        return f"{self.alias}.{key}"


@dataclass
class _Ctx:
    """Where a chain is being lowered: its binding, module path and defaults."""

    binding: str
    path: str  # module path prefix without the network, e.g. "c2" or "f.0.a"
    modifier: str | None = None  # the binding's or an enclosing element's frozen/trainable
    role: str = "layer"
    env: dict[str, str | None] = field(default_factory=dict)  # name -> node (None: failed)
    params: dict[str, Any] = field(default_factory=dict)  # template parameters in scope
    in_node: str | None = None
    templates: tuple[str, ...] = ()  # templates being instantiated (recursion guard)

    def but(self, **kw) -> "_Ctx":
        return _Ctx(**{**self.__dict__, **kw})


class Lowerer:
    """Lowers one network. Use `lower_network(net, scope)`."""

    def __init__(self, net: ir.Network, scope: Scope):
        self.net = net
        self.scope = scope
        self.nodes: dict[str, dict] = {}
        self.read: set[str] = set()  # nodes that some node reads
        self.counter: dict[str, int] = {}
        self.diags: list[Diagnostic] = []

    # -- nodes ---------------------------------------------------------------------------------

    def fresh(self, binding: str) -> str:
        k = self.counter.get(binding, 0)
        while True:
            name = f"{binding}_{k}"
            k += 1
            if name not in self.nodes and name not in self.reserved:
                self.counter[binding] = k
                return name

    def add(self, ctx: _Ctx, op: str, inputs: tuple[str, ...], shape, *, args=None, module=None,
            trainable=False, role="layer", params=0, flops=0, span=None) -> str:
        name = self.fresh(ctx.binding)
        self.read.update(inputs)
        self.nodes[name] = dict(name=name, op=op, args=args or {}, inputs=inputs, shape=tuple(shape),
                                binding=ctx.binding, module=module, trainable=trainable, role=role,
                                params=params, flops=flops, span=span)
        return name

    def shape(self, node: str) -> tuple[int, ...]:
        return self.nodes[node]["shape"]

    # -- network ---------------------------------------------------------------------------------

    def run(self) -> CheckedNetwork:
        net = self.net
        self.reserved = {s.name for s in net.body if isinstance(s, ir.Binding)} | {i.name for i in net.inputs}
        defined_at = {}
        for s in net.body:
            if isinstance(s, ir.Binding) and s.name not in defined_at:
                defined_at[s.name] = s.span
        env: dict[str, str | None] = {}
        for inp in net.inputs:
            if inp.name in env:
                self.diags.append(diagnostic(f"duplicate input '{inp.name}'", inp.span))
                continue
            self._check_name(inp.name, inp.span, "an input")
            self.nodes[inp.name] = dict(name=inp.name, op="input", args={}, inputs=(), shape=inp.shape,
                                        binding=inp.name, module=None, trainable=False, role="input",
                                        params=0, flops=0, span=inp.span)
            env[inp.name] = inp.name
        self.later = defined_at
        outputs: tuple[str, ...] = ()
        returns = [s for s in net.body if isinstance(s, ir.Return)]
        for stmt in net.body:
            if isinstance(stmt, ir.Binding):
                self._binding(stmt, env)
            elif isinstance(stmt, ir.Skips):
                self.diags.append(diagnostic("'skips' must be expanded before lowering", stmt.span))
            elif isinstance(stmt, ir.Return):
                if stmt is not returns[0]:
                    self.diags.append(diagnostic(f"network '{net.name}' has more than one 'return'", stmt.span,
                                                 width=len("return"),
                                                 hint="return several values with one statement: return a, b"))
                    continue
                outputs = self._return(stmt, env)
        if returns and net.body[-1] is not returns[0] and len(returns) == 1:
            self.diags.append(diagnostic("'return' must be the last statement of a network", returns[0].span,
                                         width=len("return"), hint="move the bindings after it before it"))
        if not returns:
            self.diags.append(diagnostic(f"network '{net.name}' has no 'return'", net.span, width=len("network"),
                                         hint="end its body with 'return NAME' naming the output binding"))
        nodes = tuple(GraphNode.model_construct(**n) for n in self.nodes.values())
        bindings = {k: v for k, v in env.items() if v is not None}
        return CheckedNetwork.model_construct(
            name=net.name, inputs={i.name: i.shape for i in net.inputs}, outputs=outputs, nodes=nodes,
            bindings=bindings, span=net.span, failed=tuple(k for k, v in env.items() if v is None))

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
        if b.name in KEYWORDS or b.name in python_reserved():
            self._check_name(b.name, at, "a binding")
        mod = b.modifier if b.modifier in ("frozen", "trainable") else None
        role = "adapter" if b.modifier == "adapter" else "layer"
        ctx = _Ctx(binding=b.name, path=b.name, modifier=mod, role=role, env=env)
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
                self.diags.append(self._undefined(name, word_span(stmt.span, name, self.scope.text, len("return")),
                                                  env))
            elif env[name] is not None:
                out.append(env[name])
        return tuple(out)

    def _undefined(self, name: str, span, env: dict) -> Diagnostic:
        if name in self.later:
            return diagnostic(f"'{name}' is used before its definition on line {self.later[name].line}", span,
                              hint="define bindings before the chains that read them")
        return diagnostic(f"undefined name '{name}'", span, hint=did_you_mean(name, env) or (
            f"the inputs and bindings defined so far are: {', '.join(env)}" if env else None))

    # -- chains ----------------------------------------------------------------------------------

    def chain(self, chain: ir.Chain, ctx: _Ctx) -> str:
        cur = self.source(chain.source, ctx)
        for i, el in enumerate(chain.elements):
            cur = self.element(el, cur, ctx.but(path=f"{ctx.path}.{i}"))
        return cur

    def source(self, src, ctx: _Ctx) -> str:
        if isinstance(src, ir.Chain):
            return self.chain(src, ctx)
        if isinstance(src, ir.In):
            if ctx.in_node is None:
                raise fail("'in' names a template's input and is only valid inside a 'block { ... }' body", src.span)
            return ctx.in_node
        if isinstance(src, ir.Ref) and len(src.parts) == 1:
            name = src.parts[0]
            if name in ctx.env:
                if ctx.env[name] is None:
                    raise Fail()  # its own error was reported
                return ctx.env[name]
            what = self._kind_of(name)
            if what:
                raise fail(f"a chain starts with an input, a binding or a merge; '{name}' is {what}", src.span,
                           hint=f"apply it to a value: x -> {name}")
            raise Fail(self._undefined(name, src.span, ctx.env))
        if isinstance(src, ir.Call) and len(src.ref.parts) == 1 and src.ref.parts[0] in MERGES:
            return self.merge(src, ctx)
        if isinstance(src, (ir.Ref, ir.Range)):
            raise fail(f"a chain starts with an input, a binding or a merge, not the reference '{src.dotted}'",
                       src.span, hint=f"apply it to a value: x -> {src.dotted}")
        if isinstance(src, ir.Call):
            raise fail(f"'{src.ref.dotted}(...)' is not a merge; a chain starts with an input, a binding or "
                       "add/mul/cat/gate(...)", src.span, hint=f"apply it to a value: x -> {src.ref.dotted}(...)")
        raise fail(f"a chain starts with an input, a binding or a merge, not {_describe(src)}", src.span)

    def _kind_of(self, name: str) -> str | None:
        if name in ops():
            return "an op"
        if name in self.scope.blocks:
            return "a template"
        if name in self.scope.shared:
            return "a shared module"
        if name in MERGES:
            return "a merge"
        return None

    # -- merges ----------------------------------------------------------------------------------

    def merge(self, call: ir.Call, ctx: _Ctx) -> str:
        op = call.ref.parts[0]
        paths = [a for a in call.args if a.name is None]
        kwargs = {a.name: a for a in call.args if a.name is not None}
        allowed = {"cat": {"dim"}, "gate": {"init"}}.get(op, set())
        for key, a in kwargs.items():
            if key not in allowed:
                hint = did_you_mean(key, allowed) or (f"'{op}' takes {', '.join(sorted(allowed))}" if allowed else
                                                      f"'{op}' takes only the chains it merges")
                raise fail(f"'{op}' has no argument '{key}'", a.span, hint=hint)
        if len(paths) < 2:
            raise fail(f"'{op}' merges two or more chains, got {len(paths)}", call.span)
        inputs = []
        errors = []
        for i, a in enumerate(paths):
            role = "proxy" if op == "gate" and i > 0 and ctx.role == "layer" else ctx.role
            try:
                value = a.value if isinstance(a.value, ir.Chain) else ir.Chain.model_construct(source=a.value, span=a.span)
                inputs.append(self.chain(value, ctx.but(path=f"{ctx.path}.in{i}", role=role)))
            except Fail as f:
                errors.extend(f.diags)
        if errors or len(inputs) < len(paths):
            raise Fail(*errors)
        shapes = [self.shape(n) for n in inputs]
        args: dict[str, Any] = {}
        if op == "cat":
            dim = self.value(kwargs["dim"].value, ctx) if "dim" in kwargs else 0
            if not isinstance(dim, int) or isinstance(dim, bool):
                raise fail("'cat' dim must be a whole number", kwargs["dim"].span)
            shape = self._cat_shape(shapes, dim, call, paths)
            args["dim"] = dim
        else:
            for a, s in zip(paths[1:], shapes[1:]):
                if s != shapes[0]:
                    raise fail(f"'{op}' merges chains of unequal shapes: {list(shapes[0])} and {list(s)}", a.span,
                               hint="every path of add, mul and gate must give the same shape")
            shape = shapes[0]
        module = None
        trainable = False
        params = 0
        if op == "gate":
            init = [2.0] + [-2.0] * (len(paths) - 1)
            if "init" in kwargs:
                init = self.value(kwargs["init"].value, ctx)
                if not (isinstance(init, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in init)):
                    raise fail("'gate' init must be a list of numbers, one logit per path", kwargs["init"].span)
                if len(init) != len(paths):
                    raise fail(f"'gate' init has {len(init)} value(s) for {len(paths)} paths", kwargs["init"].span)
            args["init"] = [float(v) for v in init]
            trainable = ctx.modifier != "frozen"
            module = self.declare(f"{ctx.path}.gate", "gate", args, shape, trainable, "gate", len(paths))
            params = len(paths)
        # multiply-accumulates: a gate weighs and sums every path, add/mul combine n paths pairwise
        flops = {"gate": len(paths), "cat": 0}.get(op, len(paths) - 1) * _numel(shape)
        return self.add(ctx, op, tuple(inputs), shape, args=args, module=module, trainable=trainable,
                        role="gate" if op == "gate" else "merge", params=params, flops=flops, span=call.span)

    def _cat_shape(self, shapes, dim, call, paths):
        rank = len(shapes[0])
        if not -rank <= dim < rank:
            raise fail(f"'cat' dim={dim} does not exist: the inputs have {rank} dimension(s) {list(shapes[0])}",
                       call.span, hint="dim counts without the batch dimension, from 0")
        d = dim % rank
        total = 0
        for a, s in zip(paths, shapes):
            if len(s) != rank or any(x != y for i, (x, y) in enumerate(zip(s, shapes[0])) if i != d):
                raise fail(f"'cat' along dim {dim} needs equal sizes elsewhere: {list(shapes[0])} and {list(s)}",
                           a.span)
            total += s[d]
        return shapes[0][:d] + (total,) + shapes[0][d + 1:]

    # -- elements --------------------------------------------------------------------------------

    def element(self, el: ir.Element, cur: str, ctx: _Ctx) -> str:
        if el.modifier:
            ctx = ctx.but(modifier=el.modifier)
        t = el.target
        if isinstance(t, ir.Range):
            return self.reference(t, cur, ctx, el)
        ref = t.ref if isinstance(t, ir.Call) else t
        args = t.args if isinstance(t, ir.Call) else None
        if len(ref.parts) > 1:
            if args is not None:
                raise fail(f"'{ref.dotted}' is a reference and takes no arguments", t.span)
            return self.reference(ref, cur, ctx, el)
        name = ref.parts[0]
        if name == "copy":
            return self.copy(t, cur, ctx, el)
        if name in self.scope.blocks:
            return self.template(self.scope.blocks[name], args or (), cur, ctx, t)
        if name in self.scope.shared:
            if args is not None:
                raise fail(f"shared module '{name}' takes no arguments", t.span)
            return self.shared(self.scope.shared[name], cur, ctx, el)
        if name in ops():
            return self.op(name, args or (), cur, ctx, t)
        if name in MERGES:
            raise fail(f"'{name}' is a merge and starts a chain: {name}(a, b)", t.span)
        if name in self.scope.imports or name in self.scope.failed:
            raise fail(f"'{name}' is an import, not an op", t.span, hint=f"use one of its bindings: {name}.BINDING")
        if name in self.scope.network_names:
            raise fail(f"'{name}' is a network, not an op", t.span, hint=f"use one of its bindings: {name}.BINDING")
        if name in ctx.env or name in self.later:
            raise fail(f"'{name}' is a binding of this network, not an op", t.span,
                       hint=f"a chain reads a binding at its start: {name} -> ...")
        if name in ctx.params:
            raise fail(f"'{name}' is a parameter of the template, not an op", t.span)
        choices = list(ops()) + list(self.scope.blocks) + list(self.scope.shared) + ["copy"]
        raise fail(f"unknown op '{name}'", ref.span, hint=did_you_mean(name, choices))

    def value(self, expr, ctx: _Ctx):
        """A literal argument value, with template parameters substituted."""
        if isinstance(expr, ir.Number):
            return expr.value
        if isinstance(expr, (ir.String, ir.Bool)):
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

    def _bind_args(self, args, ctx):
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

    def trainable(self, ctx: _Ctx, default: bool = True) -> bool:
        if ctx.modifier == "frozen":
            return False
        if ctx.modifier == "trainable":
            return True
        return default

    def op(self, name: str, args, cur: str, ctx: _Ctx, at) -> str:
        op = ops()[name]
        positional, keywords, spans = self._bind_args(args, ctx)
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
        role = "proxy" if name == "proxy" and ctx.role == "layer" else ctx.role
        module = self.declare(ctx.path, name, bound, in_shape, trainable, role, params) if op.module else None
        return self.add(ctx, name, (cur,), out, args=bound, module=module, trainable=trainable, role=role,
                        params=params, flops=flops, span=at.span)

    def declare(self, path: str, op: str, args, in_shape, trainable, role, params, **extra) -> str:
        key = f"{self.net.name}.{path}"
        self.scope.modules[key] = Module.model_construct(key=key, op=op, args=dict(args), in_shape=tuple(in_shape),
                                                         trainable=trainable, role=role, params=params,
                                                         init_from=extra.get("init_from"),
                                                         imported_from=extra.get("imported_from"))
        return key

    # -- templates and shared modules --------------------------------------------------------------

    def template(self, block: ir.Block, args, cur: str, ctx: _Ctx, at) -> str:
        if block.name in ctx.templates:
            raise fail(f"template '{block.name}' uses itself", at.span, hint="templates cannot be recursive")
        positional, keywords, spans = self._bind_args(args, ctx)
        names = [p.name for p in block.params]
        if len(positional) > len(names):
            raise fail(f"template '{block.name}' takes {len(names)} argument(s), got {len(positional)}", at.span,
                       hint=_signature(block))
        bound = dict(zip(names, positional))
        for key in keywords:
            if key not in names:
                raise fail(f"template '{block.name}' has no parameter '{key}'", spans[key],
                           hint=did_you_mean(key, names) or _signature(block))
            if key in bound:
                raise fail(f"parameter '{key}' of '{block.name}' is given twice", spans[key])
            bound[key] = keywords[key]
        for p in block.params:
            if p.name not in bound:
                if p.default is None:
                    raise fail(f"template '{block.name}' needs the argument '{p.name}'", at.span,
                               hint=_signature(block))
                bound[p.name] = self.value(p.default, ctx.but(params={}))
        inner = ctx.but(params=bound, templates=ctx.templates + (block.name,))
        if block.pipe is not None:
            out = cur
            for i, el in enumerate(block.pipe.elements):
                out = self.element(el, out, inner.but(path=f"{ctx.path}.{i}"))
            return out
        return self.body(block, cur, inner)

    def body(self, block: ir.Block, cur: str, ctx: _Ctx) -> str:
        env: dict[str, str | None] = {}
        result = None
        for stmt in block.body or ():
            if isinstance(stmt, ir.Binding):
                if stmt.name in env:
                    raise fail(f"duplicate name '{stmt.name}' in template '{block.name}'", stmt.span)
                mod = stmt.modifier if stmt.modifier in ("frozen", "trainable") else ctx.modifier
                sub = ctx.but(path=f"{ctx.path}.{stmt.name}", env=env, in_node=cur, modifier=mod,
                              role="adapter" if stmt.modifier == "adapter" else ctx.role)
                node = self.chain(stmt.chain, sub)
                env[stmt.name] = node
            elif isinstance(stmt, ir.Return):
                if result is not None:
                    raise fail(f"template '{block.name}' has more than one 'return'", stmt.span, width=len("return"))
                if len(stmt.names) != 1:
                    raise fail("a template returns exactly one value", stmt.span)
                name = stmt.names[0]
                if name not in env:
                    raise fail(f"undefined name '{name}' in template '{block.name}'", stmt.span,
                               hint=did_you_mean(name, env))
                result = env[name]
            else:
                raise fail("'skips' is not allowed inside a template", stmt.span)
        if result is None:
            raise fail(f"template '{block.name}' has no 'return'", block.span)
        return result

    def shared(self, sh: ir.Shared, cur: str, ctx: _Ctx, el: ir.Element) -> str:
        if sh.name in ctx.templates:
            raise fail(f"shared module '{sh.name}' uses itself", el.span, hint="shared modules cannot be recursive")
        if sh.frozen and el.modifier == "trainable":  # a binding-wide `trainable` leaves it frozen
            raise fail(f"shared module '{sh.name}' is declared frozen and cannot be trainable here", el.span,
                       hint="drop 'frozen' from its declaration, or train a private copy of a network's binding")
        trainable = not sh.frozen
        if ctx.modifier == "frozen":
            trainable = False
        out = cur
        ctx = ctx.but(templates=ctx.templates + (sh.name,))
        for i, e in enumerate(sh.pipe.elements):
            out = self._shared_element(sh, i, e, out, ctx, trainable, el)
        return out

    def _shared_element(self, sh: ir.Shared, i: int, e: ir.Element, cur: str, ctx: _Ctx, trainable: bool,
                        use: ir.Element) -> str:
        # Lower as a local op, then move its module under the shared name and compare with earlier uses.
        before = dict(self.scope.modules)
        sub = ctx.but(path=f"__shared__.{sh.name}.{i}", role="shared", params={},
                      modifier="frozen" if not trainable else None)
        node = self.element(e, cur, sub)
        new = {k: v for k, v in self.scope.modules.items() if k not in before or before[k] is not v}
        prefix = f"{self.net.name}.__shared__."
        for k, m in new.items():
            del self.scope.modules[k]
            key = k[len(prefix):] if k.startswith(prefix) else k
            m = m.model_copy(update={"key": key})
            old = self.scope.modules.get(key)
            if old is not None and (old.op, old.args, old.in_shape) != (m.op, m.args, m.in_shape):
                raise fail(f"shared module '{sh.name}' is used with input {list(m.in_shape)} here but "
                           f"{list(old.in_shape)} elsewhere; its parameters would differ", use.span or e.span,
                           hint="a shared module needs the same input shape in every network")
            self.scope.modules[key] = old or m
            for n in self.nodes.values():
                if n["module"] == k:
                    n["module"] = key
        return node

    # -- references, ranges, copies ----------------------------------------------------------------

    def _owner(self, ref: ir.Ref) -> tuple[CheckedNetwork, list[str], Callable[[str], str], bool]:
        """The network a dotted reference points into, the remaining parts, the key mapper and
        whether it is imported."""
        head = ref.parts[0]
        if head in self.scope.failed:
            raise Fail()
        if head in self.scope.imports:
            imp = self.scope.imports[head]
            rest = list(ref.parts[1:])
            if len(rest) == 1 and rest[0] in imp.networks and rest[0] not in imp.networks[rest[0]].bindings:
                raise fail(f"'{ref.dotted}' names a network, not a binding", ref.span,
                           hint=f"write {ref.dotted}.BINDING")
            if rest and rest[0] in imp.networks and (len(rest) > 1 or not imp.single):
                return imp.networks[rest[0]], rest[1:], imp.key, True
            if imp.single:
                return imp.networks[imp.single], rest, imp.key, True
            raise fail(f"'{ref.dotted}' names no network of '{head}'", ref.span,
                       hint=did_you_mean(rest[0] if rest else "", imp.networks) or
                       f"'{head}' holds the networks {', '.join(imp.networks)}: write {head}.NETWORK.BINDING")
        if head in self.scope.networks:
            if len(ref.parts) == 1:
                raise fail(f"'{head}' names a network, not a binding", ref.span, hint=f"write {head}.BINDING")
            return self.scope.networks[head], list(ref.parts[1:]), lambda k: k, False
        if head == self.net.name:
            raise fail(f"'{ref.dotted}' refers to this network itself", ref.span,
                       hint="read a binding of this network at the start of a chain instead")
        choices = list(self.scope.imports) + list(self.scope.networks)
        raise fail(f"unknown network or import '{head}' in '{ref.dotted}'", ref.span,
                   hint=did_you_mean(head, choices) or "import a spec with: use \"file.net\" as NAME")

    def _binding_nodes(self, owner: CheckedNetwork, name: str, ref) -> list[GraphNode]:
        if name in owner.failed:
            raise Fail()
        if name not in owner.bindings or name in owner.inputs:
            what = "an input" if name in owner.inputs else None
            if what:
                raise fail(f"'{ref.dotted}' is an input of '{owner.name}', not a block", ref.span)
            raise fail(f"network '{owner.name}' has no binding '{name}'", ref.span,
                       hint=did_you_mean(name, owner.bindings))
        nodes = [n for n in owner.nodes if n.binding == name]
        if not nodes:
            raise fail(f"'{ref.dotted}' computes nothing of its own", ref.span)
        return nodes

    def reference(self, t, cur: str, ctx: _Ctx, el: ir.Element, copy_path: str | None = None) -> str:
        ref = t.start if isinstance(t, ir.Range) else t
        owner, rest, mapkey, imported = self._owner(ref)
        if len(rest) != 1:
            raise fail(f"'{t.dotted}' must name one binding of a network", t.span,
                       hint="write NET.BINDING, or ALIAS.BINDING for a file with one network")
        names = [rest[0]] if not isinstance(t, ir.Range) else self._range(owner, rest[0], t.end, t)
        if imported and ctx.modifier == "trainable" and copy_path is None:
            raise fail(f"'{t.dotted}' is an imported block, shared by every network that uses it, and cannot be "
                       "trainable", el.span, hint=f"train a private copy instead: copy({t.dotted})")
        out = cur
        for name in names:
            out = self._splice(owner, name, out, ctx, ref, mapkey, imported, copy_path, ranged=len(names) > 1)
        return out

    def _range(self, owner: CheckedNetwork, start: str, end: str, t: ir.Range) -> list[str]:
        for name in (start, end):
            self._binding_nodes(owner, name, t)
        g = nx.DiGraph()
        for n in owner.nodes:
            for i in n.inputs:
                a, b = owner.node(i).binding, n.binding
                if a != b:
                    g.add_edge(a, b)
        paths = list(nx.all_simple_paths(g, start, end)) if start in g and end in g else []
        if start == end:
            return [start]
        if not paths:
            raise fail(f"'{t.dotted}' is not a path: '{end}' does not read '{start}'", t.span)
        if len(paths) > 1:
            raise fail(f"'{t.dotted}' is not a straight path: '{end}' is reached from '{start}' in {len(paths)} ways",
                       t.span, hint="a range composes bindings that each read only the one before")
        path = paths[0]
        for prev, name in zip(path, path[1:]):
            reads = {owner.node(i).binding for n in owner.nodes if n.binding == name for i in n.inputs} - {name}
            if reads != {prev}:
                other = sorted(reads - {prev})
                raise fail(f"'{t.dotted}' is not a straight path: '{name}' also reads {', '.join(other)}", t.span,
                           hint="a range composes bindings that each read only the one before")
        return path

    def _splice(self, owner, name, cur, ctx, ref, mapkey, imported, copy_path, ranged) -> str:
        nodes = self._binding_nodes(owner, name, ref)
        mine = {n.name for n in nodes}
        outside = []
        for n in nodes:
            for i in n.inputs:
                if i not in mine and i not in outside:
                    outside.append(i)
        if len(outside) != 1:
            raise fail(f"'{owner.name}.{name}' reads {len(outside)} values ({', '.join(outside)}); as an element it "
                       "takes exactly one input", ref.span)
        rename = {outside[0]: cur}
        last = cur
        for n in nodes:
            key = mapkey(n.module) if n.module else None
            trainable = n.trainable and not imported
            role = "imported" if imported else ("reference" if n.role == "layer" else n.role)
            if key and imported and key not in self.scope.modules:
                src = self.scope.imports[ref.parts[0]].modules[n.module]
                self.scope.modules[key] = src.model_copy(update={"key": key, "trainable": False, "role": "imported",
                                                                 "imported_from": ref.parts[0],
                                                                 "init_from": None, "origin": n.module})
            if copy_path is not None and key:
                if imported:
                    suffix = key[len(ref.parts[0]) + 1:]
                    if self.scope.imports[ref.parts[0]].single is None and suffix.startswith(owner.name + "."):
                        suffix = suffix[len(owner.name) + 1:]
                else:
                    suffix = key[len(owner.name) + 1:] if key.startswith(owner.name + ".") else key
                if not ranged and suffix.startswith(name + "."):
                    suffix = suffix[len(name) + 1:]
                src = self.scope.modules[key]
                trainable = self.trainable(ctx)
                key = self.declare(f"{copy_path}.{suffix}", src.op, src.args, src.in_shape, trainable, "copy",
                                   src.params, init_from=key)
                role = "copy"
            elif ctx.modifier and key:
                trainable = self.trainable(ctx, trainable)
            new = self.add(ctx, n.op, tuple(rename.get(i, i) for i in n.inputs), n.shape, args=n.args,
                           module=key, trainable=trainable, role=role, params=n.params, flops=n.flops, span=ref.span)
            rename[n.name] = new
            last = new
        if self.shape(cur) != owner.node(outside[0]).shape:
            raise fail(f"'{ref.dotted}' expects an input of shape {list(owner.node(outside[0]).shape)}, got "
                       f"{list(self.shape(cur))}", ref.span)
        return last

    def copy(self, t, cur: str, ctx: _Ctx, el: ir.Element) -> str:
        if not isinstance(t, ir.Call) or len(t.args) != 1 or t.args[0].name is not None or \
                not isinstance(t.args[0].value, (ir.Ref, ir.Range)) or \
                isinstance(t.args[0].value, ir.Ref) and len(t.args[0].value.parts) < 2:
            raise fail("copy takes one reference to another network's binding: copy(pre.c1)", t.span)
        return self.reference(t.args[0].value, cur, ctx, el, copy_path=ctx.path)


_PY_RESERVED: frozenset[str] | None = None


def python_reserved() -> frozenset[str]:
    """Names a compiled network cannot use: Python keywords (node and argument names) and the
    attributes of torch.fx.GraphModule (bindings and top-level names become its submodules)."""
    global _PY_RESERVED
    if _PY_RESERVED is None:
        import keyword

        from torch import fx
        _PY_RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(
            n for n in dir(fx.GraphModule) if not n.startswith("__"))
    return _PY_RESERVED


def name_problem(name: str, what: str, builtins: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """(message, hint) when `name` cannot name `what`: a keyword, a built-in, or a name that
    compiled networks reserve; None when it can."""
    if name in KEYWORDS:
        return f"'{name}' is a keyword and cannot name {what}", "choose another name"
    if name in builtins:
        return (f"'{name}' is a built-in and cannot name {what}",
                "choose another name: built-in op and merge names are reserved")
    if name in python_reserved():
        return (f"'{name}' is reserved in compiled networks (a Python keyword or an attribute of torch's "
                f"GraphModule) and cannot name {what}", "choose another name")
    return None


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _signature(block: ir.Block) -> str:
    from .printer import format_expr
    parts = [p.name if p.default is None else f"{p.name}={format_expr(p.default)}" for p in block.params]
    return f"{block.name}({', '.join(parts)})"


def _describe(expr) -> str:
    return {ir.Number: "a number", ir.String: "a string", ir.Bool: "true/false", ir.ListValue: "a list",
            ir.Chain: "a chain", ir.In: "'in'", ir.Range: "a range", ir.Call: "a call"}.get(type(expr), "this")


def lower_network(net: ir.Network, scope: Scope) -> tuple[CheckedNetwork, list[Diagnostic]]:
    lw = Lowerer(net, scope)
    checked = lw.run()
    return checked, lw.diags
