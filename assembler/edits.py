"""The public graph-edit API: pure functions `Spec -> Spec`, each checked on return.

A bad edit raises `SpecError` naming the edit and its argument. Every result prints back
to a valid spec with `assembler.format`. The `skips` macro of the language is expanded by
`add_skips`, the same function users call.
"""

from __future__ import annotations

from . import ir
from .errors import Diagnostic, SpecError, diagnostic, did_you_mean
from .lower import Fail, Scope, fail, lower_network

__all__ = ["bindings", "input_shapes", "add_skips"]


# ---------------------------------------------------------------------------------------------
# Introspection


def _network(spec: ir.Spec, net: str, edit: str) -> ir.Network:
    nets = spec.networks
    if net not in nets:
        raise SpecError(Diagnostic(f"{edit}: no network '{net}'", spec.filename,
                                   hint=did_you_mean(net, nets) or f"networks: {', '.join(nets) or 'none'}"))
    return nets[net]


def bindings(spec: ir.Spec, net: str) -> list[str]:
    """The binding names of a network, in order (after macro expansion)."""
    from .resolve import expand
    network = _network(expand(spec), net, "bindings")
    return [s.name for s in network.body if isinstance(s, ir.Binding)]


def input_shapes(spec: ir.Spec, net: str) -> dict[str, tuple[int, ...]]:
    """The input shapes of a network, without the batch dimension."""
    return {i.name: i.shape for i in _network(spec, net, "input_shapes").inputs}


# ---------------------------------------------------------------------------------------------
# Skips


def add_skips(spec: ir.Spec, net: str, nodes: list[str], k: int = 3, proxy: str | None = None) -> ir.Spec:
    """Gate each listed node with proxies from the k nodes before it (the `skips` macro).

    For nodes n0..nL, each nl (l >= 1) becomes `gate(<its chain>, np -> PROXY(c, stride) for p in
    [max(0, l-k), l-1])`, with c the channels of nl and stride the spatial ratio of np to nl."""
    from .resolve import _Checker
    network = _network(spec, net, "add_skips")
    stmt = ir.Skips(nodes=tuple(nodes), args=_skips_args(k, proxy))
    body = tuple(s for s in network.body if not isinstance(s, ir.Skips)) + (stmt,)
    trial = spec.model_copy(update={"items": tuple(
        network.model_copy(update={"body": body}) if i is network else i for i in spec.items)})
    return _checked(_Checker(trial, ()).run(return_spec=True), "add_skips")


def _skips_args(k: int, proxy: str | None) -> tuple[ir.Arg, ...]:
    args = (ir.Arg(name="k", value=ir.Number(value=k)),)
    if proxy is not None:
        args += (ir.Arg(name="proxy", value=ir.Ref(parts=(proxy,))),)
    return args


def expand_skips(net: ir.Network, scope: Scope) -> ir.Network:
    """Replace the `skips` statements of a network by gates (raises Fail with diagnostics)."""
    for stmt in [s for s in net.body if isinstance(s, ir.Skips)]:
        net = _expand_one(net, stmt, scope)
    return net


def _expand_one(net: ir.Network, stmt: ir.Skips, scope: Scope) -> ir.Network:
    k, proxy = _skips_options(stmt, scope)
    plain = net.model_copy(update={"body": tuple(s for s in net.body if not isinstance(s, ir.Skips))})
    saved = dict(scope.modules)
    checked, diags = lower_network(plain, scope)
    scope.modules.clear()
    scope.modules.update(saved)
    if diags:
        raise Fail(*diags)
    inputs = {i.name for i in net.inputs}
    shapes = {}
    for name in stmt.nodes:
        if name not in checked.bindings:
            raise fail(f"skips: '{name}' is not an input or binding of '{net.name}'", stmt.span,
                       hint=did_you_mean(name, checked.bindings))
        if name in shapes:
            raise fail(f"skips: '{name}' is listed twice", stmt.span)
        shape = checked.shape(name)
        if len(shape) != 3:
            raise fail(f"skips: '{name}' is {list(shape)}; proxies need feature maps [C, H, W]", stmt.span)
        shapes[name] = shape
    order = list(stmt.nodes)
    gated: dict[str, ir.Chain] = {}
    for l in range(1, len(order)):
        name = order[l]
        if name in inputs:
            raise fail(f"skips: the input '{name}' can only be the first node", stmt.span)
        c, h, w = shapes[name]
        paths = []
        for p in range(max(0, l - k), l):
            src = order[p]
            _, hp, wp = shapes[src]
            if hp % h or wp % w or hp // h != wp // w or hp < h:
                raise fail(f"skips: the spatial ratio from '{src}' ({hp}x{wp}) to '{name}' ({h}x{w}) is not a whole "
                           "number", stmt.span, hint="skip only between nodes whose sizes divide evenly")
            stride = hp // h
            call = ir.Call(ref=ir.Ref(parts=(proxy,)), args=(ir.Arg(value=ir.Number(value=c)),
                                                             ir.Arg(value=ir.Number(value=stride))))
            paths.append(ir.Chain(source=ir.Ref(parts=(src,)), elements=(ir.Element(target=call),)))
        gated[name] = paths
    body = []
    for s in net.body:
        if isinstance(s, ir.Skips) and s is stmt:
            continue
        if isinstance(s, ir.Binding) and s.name in gated:
            s = _gate_binding(s, gated[s.name])
        body.append(s)
    return net.model_copy(update={"body": tuple(body)})


def _skips_options(stmt: ir.Skips, scope: Scope) -> tuple[int, str]:
    k, proxy = 3, "proxy"
    for a in stmt.args:
        if a.name == "k":
            if not (isinstance(a.value, ir.Number) and isinstance(a.value.value, int)) or a.value.value < 1:
                raise fail("skips: k must be a whole number >= 1", a.value.span or stmt.span)
            k = a.value.value
        elif a.name == "proxy":
            if not (isinstance(a.value, ir.Ref) and len(a.value.parts) == 1):
                raise fail("skips: proxy must name a template taking (c, stride)", a.value.span or stmt.span)
            proxy = a.value.parts[0]
            if proxy not in scope.blocks and proxy != "proxy":
                raise fail(f"skips: unknown proxy template '{proxy}'", a.value.span or stmt.span,
                           hint=did_you_mean(proxy, scope.blocks))
        else:
            raise fail(f"skips has no option '{a.name or 'positional'}'", a.span or stmt.span,
                       hint=did_you_mean(a.name or "", ["k", "proxy"]) or "options are k and proxy")
    return k, proxy


def _gate_binding(b: ir.Binding, proxies: list[ir.Chain]) -> ir.Binding:
    chain = b.chain
    modifier = b.modifier
    if modifier in ("frozen", "trainable"):  # the modifier meant the original chain, not the proxies
        chain = chain.model_copy(update={"elements": tuple(
            e if e.modifier else e.model_copy(update={"modifier": modifier}) for e in chain.elements)})
        modifier = None
    args = tuple(ir.Arg(value=p) for p in [chain] + proxies)
    gate = ir.Call(ref=ir.Ref(parts=("gate",)), args=args, span=b.chain.span)
    return b.model_copy(update={"chain": ir.Chain(source=gate, span=b.chain.span), "modifier": modifier})


def _checked(spec: ir.Spec, edit: str) -> ir.Spec:
    from .resolve import check
    try:
        check(spec)
    except SpecError as e:
        raise SpecError([Diagnostic(f"{edit}: the edited spec is not valid", spec.filename)] + e.diagnostics) from None
    return spec
