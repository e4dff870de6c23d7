"""The public graph-edit API: pure functions `Spec -> Spec`, each checked on return.

A bad edit raises `SpecError` naming the edit and its argument. Every result prints back
to a valid spec with `assembler.format`. `add_skips` writes the language's `skips` macro and
expands it as the checker does (skips.py).
"""

from __future__ import annotations

import fnmatch

from . import ir
from .errors import Diagnostic, SpecError, did_you_mean
from .keys import GatePathName, ModuleKey
from .ops import merges
from .skips import expand_skips  # noqa: F401 - kept importable from here
from .visit import distinct_reads, rename_reads, reads as _reads

__all__ = ["add_skips", "bindings", "freeze", "input_shapes", "insert_adapter", "prune", "prune_with_map",
           "recombine", "remove", "replace", "unfreeze"]


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


def add_skips(spec: ir.Spec, net: str, nodes: list[str], k: int = 3, proxy: str | None = None,
              mix: str = "relu") -> ir.Spec:
    """Gate each listed node with proxies from the k nodes before it (the `skips` macro).

    For nodes n0..nL, each nl (l >= 1) becomes `gate(<its chain>, np -> PROXY(c, stride) for p in
    [max(0, l-k), l-1], mix=MIX)`, with c the channels of nl and stride the spatial ratio of np to
    nl; `mix="relu"` (NetTailor's code) applies a ReLU after the mix, `"sum"` none."""
    from .resolve import expand
    network = _network(spec, net, "add_skips")
    stmt = ir.Skips(nodes=tuple(nodes), args=_skips_args(k, proxy, mix))
    body = tuple(s for s in network.body if not isinstance(s, ir.Skips)) + (stmt,)
    trial = _with_network(spec, network.model_copy(update={"body": body}))
    try:
        expanded = expand(trial)
    except SpecError as e:
        raise SpecError([Diagnostic("add_skips: the edited spec is not valid", spec.filename)] + e.diagnostics) \
            from None
    return _checked(expanded, "add_skips")


def _skips_args(k: int, proxy: str | None, mix: str) -> tuple[ir.Arg, ...]:
    args = (ir.Arg(name="k", value=ir.Number(value=k)),)
    if proxy is not None:
        args += (ir.Arg(name="proxy", value=ir.Ref(parts=(proxy,))),)
    if mix != "relu":
        args += (ir.Arg(name="mix", value=ir.String(value=mix)),)
    return args


# ---------------------------------------------------------------------------------------------
# Rewiring helpers


def _with_network(spec: ir.Spec, network: ir.Network) -> ir.Spec:
    items = tuple(network if isinstance(i, ir.Network) and i.name == network.name else i for i in spec.items)
    return spec.model_copy(update={"items": items})


def _rewire(body, old: str, new: str, start: int):
    """Statements from index `start` on read `new` where they read `old`."""
    out = list(body)
    for i in range(start, len(out)):
        st = out[i]
        if isinstance(st, ir.Binding):
            out[i] = st.model_copy(update={"chain": _norm(rename_reads(st.chain, old, new))})
        elif isinstance(st, ir.Return):
            out[i] = st.model_copy(update={"names": tuple(new if n == old else n for n in st.names)})
        elif isinstance(st, ir.Skips):
            out[i] = st.model_copy(update={"nodes": tuple(new if n == old else n for n in st.nodes)})
    return tuple(out)


def _norm(chain: ir.Chain) -> ir.Chain:
    """Flatten `(a -> b) -> c` into `a -> b -> c`, as the parser does."""
    src = chain.source
    if isinstance(src, ir.Chain) and src.source is not None:
        return ir.Chain(source=src.source, elements=src.elements + chain.elements, span=chain.span)
    return chain


def _binding_index(network: ir.Network, name: str, edit: str, spec: ir.Spec) -> int:
    for i, st in enumerate(network.body):
        if isinstance(st, ir.Binding) and st.name == name:
            return i
    names = [st.name for st in network.body if isinstance(st, ir.Binding)]
    raise SpecError(Diagnostic(f"{edit}: network '{network.name}' has no binding '{name}'", spec.filename,
                               hint=did_you_mean(name, names)))


def _pipe(text: str, edit: str) -> ir.Chain:
    from .parser import parse_fragment
    try:
        return parse_fragment(text, "pipe", filename=f"<{edit} chain>")
    except SpecError as e:
        raise SpecError([Diagnostic(f"{edit}: cannot parse the chain {text!r}", f"<{edit}>")] + e.diagnostics) \
            from None


def _fresh(network: ir.Network, base: str) -> str:
    taken = {st.name for st in network.body if isinstance(st, ir.Binding)} | {i.name for i in network.inputs}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}{k}", k + 1
    return name


# ---------------------------------------------------------------------------------------------
# Edits


def insert_adapter(spec: ir.Spec, net: str, after: str, chain: str, name: str | None = None) -> ir.Spec:
    """A trainable `adapter` binding after `after` (an input or binding); its readers read the
    adapter instead. `chain` is spec text such as "conv(8, 3, pad=1) -> relu"."""
    network = _network(spec, net, "insert_adapter")
    pipe = _pipe(chain, "insert_adapter")
    inputs = [i.name for i in network.inputs]
    at = -1 if after in inputs else _binding_index(network, after, "insert_adapter", spec)
    name = name or _fresh(network, f"{after}_adapter")
    if name in {st.name for st in network.body if isinstance(st, ir.Binding)} | set(inputs):
        raise SpecError(Diagnostic(f"insert_adapter: the name '{name}' is taken in '{net}'", spec.filename))
    adapter = ir.Binding(name=name, modifier="adapter",
                         chain=ir.Chain(source=ir.Ref(parts=(after,)), elements=pipe.elements))
    body = list(network.body)
    body.insert(at + 1, adapter)
    body = _rewire(body, after, name, at + 2)
    return _checked(_with_network(spec, network.model_copy(update={"body": body})), "insert_adapter")


def remove(spec: ir.Spec, net: str, binding: str) -> ir.Spec:
    """Bypass a binding whose input and output shapes agree: its readers read its input."""
    from .resolve import check
    network = _network(spec, net, "remove")
    i = _binding_index(network, binding, "remove", spec)
    reads = list(distinct_reads(network.body[i].chain))
    if len(reads) != 1:
        raise SpecError(Diagnostic(f"remove: '{binding}' reads {len(reads)} values ({', '.join(reads)}); only a "
                                   "binding with one input can be bypassed", spec.filename))
    checked = check(spec).networks[net]
    if checked.shape(binding) != checked.shape(reads[0]):
        raise SpecError(Diagnostic(f"remove: '{binding}' turns {list(checked.shape(reads[0]))} into "
                                   f"{list(checked.shape(binding))}; only a shape-preserving binding can be "
                                   "bypassed", spec.filename, hint="use replace to change it instead"))
    body = _rewire(network.body, binding, reads[0], i + 1)
    body = body[:i] + body[i + 1:]
    return _checked(_with_network(spec, network.model_copy(update={"body": body})), "remove")


def replace(spec: ir.Spec, net: str, binding: str, chain: str) -> ir.Spec:
    """Give a binding new elements (spec text such as "conv(8, 1) -> relu"), keeping its source."""
    network = _network(spec, net, "replace")
    i = _binding_index(network, binding, "replace", spec)
    old = network.body[i]
    new = old.model_copy(update={"chain": ir.Chain(source=old.chain.source, elements=_pipe(chain, "replace").elements,
                                                   span=old.chain.span)})
    body = network.body[:i] + (new,) + network.body[i + 1:]
    return _checked(_with_network(spec, network.model_copy(update={"body": body})), "replace")


def _set_frozen(spec: ir.Spec, net: str, pattern: str, frozen: bool, edit: str) -> ir.Spec:
    network = _network(spec, net, edit)
    body, hit = [], False
    for st in network.body:
        if isinstance(st, ir.Binding) and fnmatch.fnmatchcase(st.name, pattern):
            hit = True
            st = _freeze_binding(st) if frozen else _unfreeze_binding(st)
        body.append(st)
    if not hit:
        names = [st.name for st in network.body if isinstance(st, ir.Binding)]
        raise SpecError(Diagnostic(f"{edit}: no binding of '{net}' matches '{pattern}'", spec.filename,
                                   hint=f"bindings: {', '.join(names)}"))
    return _checked(_with_network(spec, network.model_copy(update={"body": tuple(body)})), edit)


def _freeze_binding(b: ir.Binding) -> ir.Binding:
    if b.modifier == "adapter":  # keep the adapter role; freeze its elements
        elements = tuple(e.model_copy(update={"modifier": "frozen"}) for e in b.chain.elements)
        return b.model_copy(update={"chain": b.chain.model_copy(update={"elements": elements})})
    return b.model_copy(update={"modifier": "frozen"})


def _unfreeze_binding(b: ir.Binding) -> ir.Binding:
    elements = tuple(e.model_copy(update={"modifier": None}) if e.modifier == "frozen" else e
                     for e in b.chain.elements)
    chain = b.chain.model_copy(update={"elements": elements})
    return b.model_copy(update={"chain": chain, "modifier": None if b.modifier == "frozen" else b.modifier})


def freeze(spec: ir.Spec, net: str, pattern: str) -> ir.Spec:
    """Mark the bindings whose names match a glob pattern frozen."""
    return _set_frozen(spec, net, pattern, True, "freeze")


def unfreeze(spec: ir.Spec, net: str, pattern: str) -> ir.Spec:
    """Remove explicit `frozen` marks from matching bindings (imported blocks stay frozen:
    replace them by copy(...) to train them)."""
    return _set_frozen(spec, net, pattern, False, "unfreeze")


def _path_to(network: ir.Network, start: str | None, end: str, edit: str, spec: ir.Spec) -> list[str]:
    """The straight run of bindings ending at `end` that begins after `start` (or at an input)."""
    by_name = {st.name: st for st in network.body if isinstance(st, ir.Binding)}
    inputs = {i.name for i in network.inputs}
    path, cur = [], end
    while True:
        if cur not in by_name:
            raise SpecError(Diagnostic(f"{edit}: '{network.name}' has no binding '{cur}'", spec.filename,
                                       hint=did_you_mean(cur, by_name)))
        path.insert(0, cur)
        reads = list(distinct_reads(by_name[cur].chain))
        if len(reads) != 1:
            raise SpecError(Diagnostic(f"{edit}: '{network.name}.{cur}' reads {len(reads)} values; the part must be "
                                       "a straight path", spec.filename))
        if reads[0] == start or (start is None and reads[0] in inputs):
            return path
        if reads[0] in inputs:
            raise SpecError(Diagnostic(f"{edit}: '{network.name}.{end}' does not read '{start}'", spec.filename))
        cur = reads[0]


def _part(spec: ir.Spec, text: str, start_after: str | None, edit: str) -> tuple[ir.Network, ir.Element, str]:
    net_name, _, rest = text.partition(".")
    network = _network(spec, net_name, edit)
    if ".." in rest:
        first, _, last = rest.partition("..")
        path = [first, last]
    else:
        path = _path_to(network, start_after, rest, edit, spec)
        last = rest
    ref = ir.Ref(parts=(net_name, path[0]))
    target = ref if len(path) == 1 else ir.Range(start=ref, end=path[-1])
    return network, ir.Element(target=target), last


def recombine(spec: ir.Spec, extractor: str, head: str, name: str) -> ir.Spec:
    """A new network of one network's extractor and another's head: `extractor="a.f"` is a's
    straight path from its input up to f, `head="b.y"` is b's path after its own binding named
    like the extractor's end, up to y (give `b.g..y` to say where it starts)."""
    a, ext, f = _part(spec, extractor, None, "recombine")
    _, hd, _ = _part(spec, head, f, "recombine")
    if name in {getattr(i, "name", getattr(i, "alias", None)) for i in spec.items}:
        raise SpecError(Diagnostic(f"recombine: the name '{name}' is taken", spec.filename))
    inputs = a.inputs
    body = (ir.Binding(name="y", chain=ir.Chain(source=ir.Ref(parts=(inputs[0].name,)), elements=(ext, hd))),
            ir.Return(names=("y",)))
    network = ir.Network(name=name, inputs=inputs, body=body)
    return _checked(spec.model_copy(update={"items": spec.items + (network,)}), "recombine")


def prune(spec: ir.Spec, net: str, remove: list[str]) -> ir.Spec:
    """Drop gate paths (`"c3.in2"`: path 2 of the gate of binding c3) and bindings (`"c3"`),
    cascading: a gate left with one path becomes that path, a gate left with none and a
    binding nobody reads go away (their readers' paths with them)."""
    return prune_with_map(spec, net, remove)[0]


def prune_with_map(spec: ir.Spec, net: str, remove: list[str]) -> tuple[ir.Spec, dict[str, str], dict[str, list[int]]]:
    """`prune`, a map from old module path prefixes (`c3.in2`) to new ones, and per surviving
    gate the indices of its kept paths, so that weights can follow the edit."""
    _network(spec, net, "prune")
    spec = _expanded(spec)
    network = spec.networks[net]
    bindings = {st.name: st for st in network.body if isinstance(st, ir.Binding)}
    returned = {n for st in network.body if isinstance(st, ir.Return) for n in st.names}
    drop_paths, gone = _prune_targets(spec, net, bindings, remove)
    _cascade(bindings, returned, drop_paths, gone)
    absorbed = _absorbed(spec, net) if drop_paths else {}
    lost = returned & gone
    if lost:
        raise SpecError(Diagnostic(f"prune: removing {', '.join(remove)} would remove the output(s) "
                                   f"{', '.join(sorted(lost))} of '{net}'", spec.filename))
    keymap: dict[str, str] = {}
    kept: dict[str, list[int]] = {}
    body = []
    for st in network.body:
        if isinstance(st, ir.Binding):
            if st.name in gone:
                continue
            if drop_paths.get(st.name):
                st = _drop(st, drop_paths[st.name], keymap, kept, absorbed.get(st.name, set()))
        body.append(st)
    out = _with_network(spec, network.model_copy(update={"body": tuple(body)}))
    return _checked(out, "prune"), keymap, kept


def _prune_targets(spec: ir.Spec, net: str, bindings: dict[str, ir.Binding],
                   remove: list[str]) -> tuple[dict[str, set[int]], set[str]]:
    """What `remove` names: gate paths to drop per binding, and whole bindings."""
    drop_paths: dict[str, set[int]] = {}
    gone: set[str] = set()
    for item in map(GatePathName, remove):
        b = item.binding
        if b not in bindings:
            raise SpecError(Diagnostic(f"prune: '{net}' has no binding '{b}' (in {str(item)!r})", spec.filename,
                                       hint=did_you_mean(b, bindings)))
        if not item.is_path:
            gone.add(b)
            continue
        gate = _gate_of(bindings[b])
        if gate is None or item.index is None or item.index >= len(_paths(gate)):
            what = "not a gate" if gate is None else f"a gate of {len(_paths(gate))} paths"
            raise SpecError(Diagnostic(f"prune: {str(item)!r} names no gate path of '{b}'", spec.filename,
                                       hint=f"'{b}' is {what}"))
        drop_paths.setdefault(b, set()).add(item.index)
    return drop_paths, gone


def _cascade(bindings: dict[str, ir.Binding], returned: set[str], drop_paths: dict[str, set[int]],
             gone: set[str]) -> None:
    """Grow `drop_paths` and `gone` until nothing more dies: a path reading a removed binding,
    a gate without paths, a binding reading a removed one, a binding nobody reads."""
    changed = True
    while changed:
        changed = False
        for name, st in bindings.items():
            if name in gone:
                continue
            gate = _gate_of(st)
            if gate is not None:
                paths = _paths(gate)
                dead = {i for i, p in enumerate(paths) if set(_reads(p)) & gone}
                if not dead <= drop_paths.get(name, set()):
                    drop_paths.setdefault(name, set()).update(dead)
                    changed = True
                if len(drop_paths.get(name, ())) == len(paths):
                    gone.add(name)
                    changed = True
            elif set(_reads(st.chain)) & gone:
                gone.add(name)
                changed = True
        readers = {r for n, st in bindings.items() if n not in gone for r in _reads_live(st, drop_paths.get(n, set()))}
        unread = {n for n in bindings if n not in gone and n not in readers and n not in returned}
        gone |= unread
        changed = changed or bool(unread)


def _expanded(spec: ir.Spec) -> ir.Spec:
    if any(isinstance(st, ir.Skips) for n in spec.networks.values() for st in n.body):
        from .resolve import expand
        return expand(spec)
    return spec


def _gate_of(b: ir.Binding) -> ir.Call | None:
    src = b.chain.source
    if isinstance(src, ir.Call) and len(src.ref.parts) == 1:  # a merge whose paths can be pruned
        merge = merges().get(src.ref.parts[0])
        if merge is not None and merge.role == "gate":
            return src
    return None


def _paths(gate: ir.Call) -> list:
    return [a.value for a in gate.args if a.name is None]


def _reads_live(b: ir.Binding, dropped: set[int]) -> list[str]:
    gate = _gate_of(b)
    if gate is None:
        return _reads(b.chain)
    return [r for i, p in enumerate(_paths(gate)) if i not in dropped for r in _reads(p)]


def _absorbed(spec: ir.Spec, net: str) -> dict[str, set[int]]:
    """Per binding whose gate mixes with a ReLU (`mix="relu"`): the paths whose own final ReLU
    the gate took over (`GraphNode.args["absorbed"]`, from the lowering)."""
    from .resolve import check
    checked = check(spec).networks[net]
    return {n.binding: set(n.args.get("absorbed", ())) for n in checked.nodes
            if n.role == "gate" and n.module == ModuleKey(net).child(n.binding, "gate") and n.args.get("mix") == "relu"}


def _drop(b: ir.Binding, dropped: set[int], keymap: dict[str, str], kept: dict[str, list[int]],
          absorbed: set[int]) -> ir.Binding:
    """The binding without the gate paths `dropped`. A gate left with one path becomes that
    path; after a `mix="relu"` gate, followed by a `relu` unless the path's own (moved into
    the mix by the lowering) comes back with it: the function stays relu(1 * path)."""
    gate = _gate_of(b)
    paths = _paths(gate)
    keep = [i for i in range(len(paths)) if i not in dropped]
    init_arg = next((a for a in gate.args if a.name == "init"), None)
    mix_arg = next((a for a in gate.args if a.name == "mix"), None)
    init = [x.value for x in init_arg.value.items] if init_arg else [2.0] + [-2.0] * (len(paths) - 1)
    if len(keep) == 1:
        only = paths[keep[0]]
        only = only if isinstance(only, ir.Chain) else ir.Chain(source=only)
        relu = mix_arg is not None and getattr(mix_arg.value, "value", None) == "relu" and keep[0] not in absorbed
        elements = only.elements + ((ir.Element(target=ir.Ref(parts=("relu",))),) if relu else ())
        keymap[f"{b.name}.in{keep[0]}"] = b.name  # its elements now sit at the binding's own indices
        k = len(elements)
        for j in range(len(b.chain.elements)):
            keymap[f"{b.name}.{j}"] = f"{b.name}.{j + k}"
        chain = ir.Chain(source=only.source, elements=elements + b.chain.elements, span=b.chain.span)
        return b.model_copy(update={"chain": chain})
    for new, old in enumerate(keep):
        keymap[f"{b.name}.in{old}"] = f"{b.name}.in{new}"
    kept[b.name] = keep
    args = tuple(ir.Arg(value=paths[i]) for i in keep) + (
        ir.Arg(name="init", value=ir.ListValue(items=tuple(ir.Number(value=float(init[i])) for i in keep))),) + (
        (mix_arg,) if mix_arg is not None else ())
    return b.model_copy(update={"chain": b.chain.model_copy(update={"source": gate.model_copy(update={"args": args})})})


def _checked(spec: ir.Spec, edit: str) -> ir.Spec:
    from .resolve import check
    try:
        check(spec)
    except SpecError as e:
        raise SpecError([Diagnostic(f"{edit}: the edited spec is not valid", spec.filename)] + e.diagnostics) from None
    return spec
