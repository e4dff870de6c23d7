"""The `skips` macro: `skips n0, n1, ..., nL (k=K, proxy=P, mix=M)` -> gates with proxies.

For the listed nodes each nl (l >= 1) becomes `gate(<its chain>, np -> P(c, stride) for p in
[max(0, l-k), l-1], mix=M)`, with c the channels of nl and stride the spatial ratio of np to
nl, both from shape inference. M is "relu" by default: NetTailor's code mixes as
relu(sum_i alpha_i path_i), the block's own final ReLU moved after the mix. The checking
pipeline expands the macro here; `edits.add_skips` (the public edit) writes the statement and
lets the pipeline expand it.
"""

from __future__ import annotations

from . import ir
from .errors import did_you_mean
from .lower import lower_network
from .scope import Fail, Scope, fail


def expand_skips(net: ir.Network, scope: Scope) -> ir.Network:
    """Replace the `skips` statements of a network by gates (raises Fail with diagnostics)."""
    for stmt in [s for s in net.body if isinstance(s, ir.Skips)]:
        net = _expand_one(net, stmt, scope)
    return net


def _expand_one(net: ir.Network, stmt: ir.Skips, scope: Scope) -> ir.Network:
    k, proxy, mix = _options(stmt, scope)
    plain = net.model_copy(update={"body": tuple(s for s in net.body if not isinstance(s, ir.Skips))})
    checked, _, diags = lower_network(plain, scope)  # for the shapes only
    if diags:
        raise Fail(*diags)
    shapes = _node_shapes(net, stmt, checked)
    order = list(stmt.nodes)
    inputs = {i.name for i in net.inputs}
    gated: dict[str, list[ir.Chain]] = {}
    for l in range(1, len(order)):
        name = order[l]
        if name in inputs:
            raise fail(f"skips: the input '{name}' can only be the first node", stmt.span)
        gated[name] = [_proxy_path(order[p], shapes[order[p]], name, shapes[name], proxy, stmt)
                       for p in range(max(0, l - k), l)]
    body = [_gate_binding(s, gated[s.name], mix) if isinstance(s, ir.Binding) and s.name in gated else s
            for s in net.body if s is not stmt]
    return net.model_copy(update={"body": tuple(body)})


def _node_shapes(net: ir.Network, stmt: ir.Skips, checked) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name in stmt.nodes:
        if name in checked.failed:
            raise Fail()  # the binding's own error (or its failed import's) explains it
        if name not in checked.bindings:
            raise fail(f"skips: '{name}' is not an input or binding of '{net.name}'", stmt.span,
                       hint=did_you_mean(name, checked.bindings))
        if name in shapes:
            raise fail(f"skips: '{name}' is listed twice", stmt.span)
        shape = checked.shape(name)
        if len(shape) != 3:
            raise fail(f"skips: '{name}' is {list(shape)}; proxies need feature maps [C, H, W]", stmt.span)
        shapes[name] = shape
    return shapes


def _proxy_path(src: str, src_shape, name: str, shape, proxy: str, stmt: ir.Skips) -> ir.Chain:
    """`src -> PROXY(c, stride)`, the path from `src` into the gate of `name`."""
    c, h, w = shape
    _, hp, wp = src_shape
    if hp % h or wp % w or hp // h != wp // w or hp < h:
        raise fail(f"skips: the spatial ratio from '{src}' ({hp}x{wp}) to '{name}' ({h}x{w}) is not a whole "
                   "number", stmt.span, hint="skip only between nodes whose sizes divide evenly")
    call = ir.Call(ref=ir.Ref(parts=(proxy,), span=stmt.span), span=stmt.span,
                   args=(ir.Arg(value=ir.Number(value=c)), ir.Arg(value=ir.Number(value=hp // h))))
    return ir.Chain(source=ir.Ref(parts=(src,)), elements=(ir.Element(target=call, span=stmt.span),))


def _options(stmt: ir.Skips, scope: Scope) -> tuple[int, str, str]:
    k, proxy, mix = 3, "proxy", "relu"
    for a in stmt.args:
        if a.name == "k":
            if not (isinstance(a.value, ir.Number) and isinstance(a.value.value, int)) or a.value.value < 1:
                raise fail("skips: k must be a whole number >= 1", a.value.span or stmt.span)
            k = a.value.value
        elif a.name == "proxy":
            proxy = _proxy_option(a, stmt, scope)
        elif a.name == "mix":
            if not (isinstance(a.value, ir.String) and a.value.value in ("sum", "relu")):
                raise fail('skips: mix must be "relu" or "sum"', a.value.span or stmt.span,
                           hint='"relu": relu(sum of alpha * path), as NetTailor\'s code; "sum": the plain sum')
            mix = a.value.value
        else:
            raise fail(f"skips has no option '{a.name or 'positional'}'", a.span or stmt.span,
                       hint=did_you_mean(a.name or "", ["k", "proxy", "mix"]) or "options are k, proxy and mix")
    return k, proxy, mix


def _proxy_option(a: ir.Arg, stmt: ir.Skips, scope: Scope) -> str:
    if not (isinstance(a.value, ir.Ref) and len(a.value.parts) == 1):
        raise fail("skips: proxy must name a template taking (c, stride)", a.value.span or stmt.span)
    proxy = a.value.parts[0]
    if proxy not in scope.blocks and proxy != "proxy":
        raise fail(f"skips: unknown proxy template '{proxy}'", a.span or stmt.span, hint=did_you_mean(proxy, scope.blocks))
    block = scope.blocks.get(proxy)
    if block is not None and not (len(block.params) >= 2 and all(p.default is not None for p in block.params[2:])):
        raise fail(f"skips: the proxy template '{proxy}' takes {len(block.params)} argument(s); a proxy "
                   "takes (c, stride)", a.span or stmt.span, hint=f"declare it as: block {proxy}(c, stride) = ...")
    return proxy


def _gate_binding(b: ir.Binding, proxies: list[ir.Chain], mix: str) -> ir.Binding:
    chain = b.chain
    modifier = b.modifier
    if modifier in ("frozen", "trainable"):  # the modifier meant the original chain, not the proxies
        chain = chain.model_copy(update={"elements": tuple(
            e if e.modifier or not _takes(modifier, e) else e.model_copy(update={"modifier": modifier})
            for e in chain.elements)})
        modifier = None
    main = chain if chain.elements else chain.source  # `gate(a, ...)`, as the parser reads it
    args = tuple(ir.Arg(value=p) for p in [main] + proxies) + (
        (ir.Arg(name="mix", value=ir.String(value=mix)),) if mix != "sum" else ())
    gate = ir.Call(ref=ir.Ref(parts=("gate",)), args=args, span=b.chain.span)
    return b.model_copy(update={"chain": ir.Chain(source=gate, span=b.chain.span), "modifier": modifier})


def _takes(modifier: str, e: ir.Element) -> bool:
    """Whether a binding-wide modifier changes an element when written on it: `frozen` always;
    `trainable` only on references to other networks' bindings (ops, templates and shared
    modules are trainable by default, and a frozen shared module stays frozen binding-wide)."""
    if modifier == "frozen":
        return True
    target = e.target.ref if isinstance(e.target, ir.Call) else e.target
    return isinstance(target, ir.Range) or isinstance(target, ir.Ref) and len(target.parts) > 1
