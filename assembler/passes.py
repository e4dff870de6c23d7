"""The checking passes: each a function from the pipeline's `State` to a new `State`.

`resolve.PASSES` lists them in order. A pass adds what it found (imports, networks, modules,
edges, sections) and the diagnostics it raised; it never changes what an earlier pass made.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from . import ir
from . import settings as settings_mod
from .errors import Diagnostic, diagnostic, did_you_mean, source_lines, word_span
from .graph import CheckedNetwork, Edge, Module, TrainSection
from .keys import BindingRef, ModuleKey
from .lower import lower_network
from . import signature
from .ops import builtin_names, ops
from .parser import KEYWORDS
from .scope import Fail, Imported, Limits, Scope, name_problem
from .visit import uses, walk
from .weightings import WEIGHTINGS


@dataclass(frozen=True)
class State:
    """What the pipeline knows of one spec so far."""

    spec: ir.Spec
    stack: tuple[str, ...] = ()  # resolved paths of the specs importing this one (cycles)
    limits: Limits = Limits()
    diags: tuple[Diagnostic, ...] = ()
    warnings: tuple[str, ...] = ()
    imports: dict[str, Imported] = field(default_factory=dict)
    failed: frozenset[str] = frozenset()  # imports and networks whose errors stop references to them
    order: tuple[str, ...] = ()  # networks in dependency order
    used: frozenset[str] = frozenset()  # templates and shared modules some network uses
    expanded: dict[str, ir.Network] = field(default_factory=dict)  # networks with `skips` expanded
    networks: dict[str, CheckedNetwork] = field(default_factory=dict)
    modules: dict[str, Module] = field(default_factory=dict)
    edges: tuple[Edge, ...] = ()
    trains: tuple[TrainSection, ...] = ()

    def report(self, diags: list[Diagnostic], **changes) -> "State":
        """This state with more diagnostics (and other fields changed)."""
        return replace(self, diags=self.diags + tuple(diags), **changes)


Pass = Callable[[State], State]


# ---------------------------------------------------------------------------------------------
# Names


_KINDS = {"Use": ("an import", None), "Block": ("a template", "block"), "Shared": ("a shared module", "shared"),
          "Network": ("a network", "network")}


def check_names(st: State) -> State:
    """Top-level names: keywords, built-ins, reserved names, duplicates; template parameters."""
    diags: list[Diagnostic] = []
    seen: dict[str, ir.Node] = {}
    builtins = builtin_names()
    for item in st.spec.items:
        name = getattr(item, "alias", None) or getattr(item, "name", None)
        if name is None:
            continue
        what, keyword = _KINDS[type(item).__name__]
        at = _name_span(st.spec, item, name, keyword)
        problem = name_problem(name, what, builtins)
        if problem:
            diags.append(diagnostic(problem[0], at, hint=problem[1]))
        if name in seen:
            first = seen[name].span
            where = f" (first defined on line {first.line})" if first else ""
            diags.append(diagnostic(f"duplicate name '{name}'{where}", at))
        else:
            seen[name] = item
        if isinstance(item, ir.Block):
            diags += _param_problems(item)
    return st.report(diags)


def _name_span(spec: ir.Spec, item, name: str, keyword: str | None):
    """The span of a top-level statement's name (after its keyword; after `as` in a `use`)."""
    span, text = item.span, spec.text
    if span is None or not text:
        return span
    line = source_lines(text)[span.line - 1]
    if keyword is None:
        k = line.rfind(" as ")
        return word_span(span, name, text, max(0, k + 4 - (span.column - 1)) if k >= 0 else 0)
    k = line.find(keyword, span.column - 1)
    return word_span(span, name, text, (k - span.column + 1 + len(keyword)) if k >= 0 else 0)


def _param_problems(block: ir.Block) -> list[Diagnostic]:
    diags, seen = [], set()
    for p in block.params:
        span = p.span or block.span
        if p.name in KEYWORDS:
            diags.append(diagnostic(f"'{p.name}' is a keyword and cannot name a parameter", span,
                                    width=len(p.name), hint="choose another name"))
        if p.name in seen:
            diags.append(diagnostic(f"parameter '{p.name}' of template '{block.name}' is declared twice", span,
                                    width=len(p.name)))
        seen.add(p.name)
    return diags


def unused_definitions(st: State) -> State:
    """Templates and shared modules that no network uses cannot be lowered (nothing gives them
    an input shape); their element names are still checked, so a typo does not wait."""
    spec = st.spec
    defs = {**spec.blocks, **spec.shared}
    known = set(spec.blocks) | set(spec.shared) | set(ops()) | {"copy"}
    diags = []
    for name, item in defs.items():
        if name in st.used:
            continue
        params = {p.name for p in item.params} if isinstance(item, ir.Block) else set()
        for el in (n for n in walk(item) if isinstance(n, ir.Element)):
            ref = el.target.ref if isinstance(el.target, ir.Call) else el.target
            if isinstance(ref, ir.Ref) and len(ref.parts) == 1 and ref.parts[0] not in known | params:
                diags.append(diagnostic(f"unknown op '{ref.parts[0]}'", ref.span,
                                        hint=did_you_mean(ref.parts[0], known)))
    return st.report(diags)


# ---------------------------------------------------------------------------------------------
# Network order and lowering


def order_networks(st: State) -> State:
    """Same-file references (also through templates and shared modules) -> dependency order;
    also which templates and shared modules the networks use."""
    nets = st.spec.networks
    defs = {**st.spec.blocks, **st.spec.shared}
    memo: dict[str, tuple[set[str], set[str]]] = {}
    edges, used = [], set()
    for name, net in nets.items():
        heads, reached = _network_deps(net, defs, memo)
        used |= reached
        edges += [(head, name) for head in heads if head in nets and head != name]
    if not edges:  # nothing to reorder (and no need to load networkx)
        return replace(st, order=tuple(nets), used=frozenset(used))
    import networkx as nx
    g = nx.DiGraph()
    g.add_nodes_from(nets)
    g.add_edges_from(edges)
    position = {n: i for i, n in enumerate(nets)}
    try:
        order = tuple(nx.lexicographical_topological_sort(g, key=position.__getitem__))
        return replace(st, order=order, used=frozenset(used))
    except nx.NetworkXUnfeasible:
        cycle = [a for a, _ in nx.find_cycle(g)]
        diag = diagnostic(f"networks refer to each other in a cycle: {' -> '.join(cycle + cycle[:1])}",
                          nets[cycle[0]].span, width=len("network"))
        return st.report([diag], order=tuple(n for n in nets if n not in cycle), used=frozenset(used))


def _network_deps(net: ir.Network, defs: dict, memo: dict) -> tuple[set[str], set[str]]:
    """The heads of the dotted references a network makes, also through the templates and
    shared modules it uses (transitively), and those definitions. `memo` keeps each
    definition's own uses, so that a template used by many networks is walked once."""
    names, heads = uses(net)
    heads, seen, todo = set(heads), set(), list(names)
    while todo:
        name = todo.pop()
        if name not in defs or name in seen:
            continue
        seen.add(name)
        if name not in memo:
            memo[name] = uses(defs[name])
        inner_names, inner_heads = memo[name]
        heads |= inner_heads
        todo.extend(inner_names)
    return heads, seen


def lower_networks(st: State) -> State:
    """Every network in dependency order: `skips` expanded, then lowered to an op graph."""
    spec, diags = st.spec, []
    networks: dict[str, CheckedNetwork] = {}
    modules: dict[str, Module] = {}
    expanded: dict[str, ir.Network] = {}
    scope = Scope(blocks=spec.blocks, shared=spec.shared, networks=networks, imports=st.imports, modules=modules,
                  failed=st.failed, text=spec.text, network_names=frozenset(spec.networks), limits=st.limits)
    broken = set()  # networks with errors of their own: later passes do not pile errors on them
    for name in st.order:
        net, before = spec.networks[name], len(diags)
        if any(isinstance(s, ir.Skips) for s in net.body):
            net = expand_macros(net, scope, diags)
            expanded[name] = net
        checked, declared, found = lower_network(net, scope)
        diags += found
        if len(diags) > before:
            broken.add(name)
        networks[name] = checked
        modules.update(declared)
    return st.report(diags, networks=networks, modules=modules, expanded=expanded, failed=st.failed | broken)


def expand_macros(net: ir.Network, scope: Scope, diags: list[Diagnostic]) -> ir.Network:
    """The network with its `skips` expanded; on a bad `skips`, its diagnostics go to `diags`
    and the network is checked without it (no cascade of errors)."""
    from .skips import expand_skips
    try:
        return expand_skips(net, scope)
    except Fail as f:
        diags += f.diags
        return net.model_copy(update={"body": tuple(s for s in net.body if not isinstance(s, ir.Skips))})


def check_limits(st: State) -> State:
    """The parameters of all modules together stay within `limits.params` (each module alone is
    checked where it is declared)."""
    total, limit = 0, st.limits.params
    for key, m in st.modules.items():
        total += m.params
        if total > limit:
            net = st.networks.get(ModuleKey(key).owner)
            span = next((n.span for n in net.nodes if n.module == key), None) if net else None
            return st.report([diagnostic(
                f"the spec's modules would have more than {limit:,} parameters together (this one brings the "
                f"total to {total:,})", span, hint="make the networks smaller, or raise the limit "
                "(--max-params, ASSEMBLER_MAX_PARAMS)")])
    return st


# ---------------------------------------------------------------------------------------------
# Matching edges


def check_matches(st: State) -> State:
    """`match` statements -> resolved edges with the shapes of both ends."""
    diags: list[Diagnostic] = []
    edges: list[Edge] = []
    for m in st.spec.matches:
        resolved = _weighting(m, diags)
        if resolved is None:
            continue
        w, options = resolved
        for pair in m.edges():
            s, t = _endpoint(st, pair.source, diags), _endpoint(st, pair.target, diags)
            if s is None or t is None:
                continue
            problem = _edge_shapes(w.name, w.shapes, pair, s, t)
            if problem:
                diags.append(diagnostic(problem[0], pair.span or m.span, hint=problem[1]))
                continue
            edges.append(Edge(source=BindingRef(pair.source.dotted), target=BindingRef(pair.target.dotted),
                              source_shape=s, target_shape=t, weighting=w.name, options=options,
                              span=pair.span or m.span))
    return st.report(diags, edges=tuple(edges))


def _weighting(m: ir.Match, diags: list[Diagnostic]):
    """The match's weighting entry and its options, or None (with a diagnostic)."""
    w = m.weighting
    name = w.dotted if isinstance(w, ir.Ref) else w.ref.dotted
    if name not in WEIGHTINGS:
        diags.append(diagnostic(f"unknown weighting '{name}'", w.span,
                                hint=did_you_mean(name, WEIGHTINGS) or f"weightings are: {', '.join(WEIGHTINGS)}"))
        return None
    entry = WEIGHTINGS[name]
    names = [a.name for a in entry.args]
    options = {a.name: a.default for a in entry.args}
    for a in w.args if isinstance(w, ir.Call) else ():
        if a.name not in names:
            diags.append(diagnostic(f"weighting '{name}' has no option '{a.name or 'positional'}'", a.span,
                                    hint=f"it takes: {', '.join(names) or 'none'}"))
            continue
        arg = entry.args[names.index(a.name)]
        if arg.kind is bool:
            if not isinstance(a.value, ir.Bool):
                diags.append(diagnostic(f"'{a.name}' must be true or false", a.value.span))
                continue
            options[a.name] = a.value.value
            continue
        value = a.value.value if isinstance(a.value, ir.Number) else None
        if not isinstance(value, int) or signature.in_range(value) or (arg.check and arg.check(value)):
            diags.append(diagnostic(f"'{a.name}' must be a whole number >= 0", a.value.span))
            continue
        options[a.name] = value
    return entry, options


def _edge_shapes(name: str, kind: str, pair: ir.Pair, s, t) -> tuple[str, str | None] | None:
    if kind == "equal" and s != t:
        return (f"'{name}' matching needs equal shapes: {pair.source.dotted} is {list(s)}, {pair.target.dotted} "
                f"is {list(t)}", "use 'fitnet' (a trainable 1x1 regressor) between shapes that differ")
    if kind == "maps" and (len(s) != 3 or len(t) != 3):
        return (f"'{name}' matching needs feature maps [C, H, W]: {pair.source.dotted} is {list(s)}, "
                f"{pair.target.dotted} is {list(t)}", None)
    return None


def _endpoint(st: State, ref: ir.Ref, diags: list[Diagnostic]) -> tuple[int, ...] | None:
    head = ref.parts[0]
    if head in st.failed:
        return None
    if len(ref.parts) == 1 and (head in st.networks or head in st.imports):
        diags.append(diagnostic(f"match endpoint '{head}' names a network, not a binding", ref.span,
                                hint=f"write {head}.BINDING"))
        return None
    if head in st.networks:
        if len(ref.parts) != 2:
            diags.append(diagnostic(f"'{ref.dotted}' must name one binding of a network", ref.span,
                                    hint=f"write {head}.BINDING"))
            return None
        return _shape_of(st.networks[head], ref.parts[1], ref, diags)
    if head in st.imports:
        imp, rest = st.imports[head], ref.parts[1:]
        if len(rest) == 2 and rest[0] in imp.networks:
            return _shape_of(imp.networks[rest[0]], rest[1], ref, diags)
        if len(rest) == 1 and imp.single:
            return _shape_of(imp.networks[imp.single], rest[0], ref, diags)
        diags.append(diagnostic(f"'{ref.dotted}' names no binding of '{head}'", ref.span,
                                hint="write ALIAS.BINDING, or ALIAS.NETWORK.BINDING"))
        return None
    hint = did_you_mean(head, list(st.networks) + list(st.imports)) or "a match endpoint is NETWORK.BINDING"
    diags.append(diagnostic(f"unknown network '{head}' in match endpoint '{ref.dotted}'", ref.span, hint=hint))
    return None


def _shape_of(net: CheckedNetwork, binding: str, ref: ir.Ref, diags: list[Diagnostic]):
    if binding in net.failed:
        return None
    if binding not in net.bindings:
        diags.append(diagnostic(f"network '{net.name}' has no binding '{binding}'", ref.span,
                                hint=did_you_mean(binding, net.bindings)))
        return None
    return net.shape(binding)


# ---------------------------------------------------------------------------------------------
# Train sections


def _named_networks(st: State) -> dict[str, CheckedNetwork]:
    """Every checked network by the name a setting uses: `net`, `alias.net`, `alias` (one network);
    networks with errors of their own, or with bindings that could not be built (a failed
    import), are left out: their errors explain what follows."""
    out = {n: net for n, net in st.networks.items() if n not in st.failed and not net.failed}
    for alias, imp in st.imports.items():
        out.update({f"{alias}.{n}": net for n, net in imp.networks.items()})
        if imp.single:
            out[alias] = imp.networks[imp.single]
    return out


def check_trains(st: State) -> State:
    """`train` sections against the networks and the plug-in registries (settings.py)."""
    spec, diags, warnings, out = st.spec, [], [], []
    trained: dict[str, ir.Train] = {}
    imported = {f"{alias}.{n}" for alias, imp in st.imports.items() for n in imp.networks}
    imported |= {alias for alias, imp in st.imports.items() if imp.single}
    networks, shared = set(spec.networks), set(spec.shared)
    for t in spec.trains:
        ok = _section_networks(st, t, trained, diags)
        sscope = settings_mod.SectionScope(
            networks=networks, imported=imported, shared=shared,
            bindings={n: set(st.networks[n].bindings) for n in t.networks if n in st.networks}, trained=t.networks,
            checked=_named_networks(st), modules=st.modules, edges=st.edges)
        values, spans, found = settings_mod.check_train(t, sscope)
        diags += found
        if ok and not found:
            warnings += _unimplemented(t, values)
            out.append(TrainSection(networks=t.networks, settings=_jsonable(values), span=t.span,
                                    spans={k: v for k, v in spans.items() if v is not None}))
    return st.report(diags, warnings=st.warnings + tuple(warnings), trains=tuple(_held_out_shares(out)))


def _held_out_shares(sections: list[TrainSection]) -> list[TrainSection]:
    """Each section's `validation` share made explicit where the spec does not write it: the
    procedure's own default (NetTailor's 0.2), and, for the section that trains another
    section's `teacher` on the same data with the same seed, that section's share, so that a
    teacher never trains on the samples its student's choices are measured on (LANGUAGE.md,
    decision 36)."""
    def share(t: TrainSection) -> float:
        plugin = settings_mod.plugins("procedure").get(t.settings.get("procedure", {}).get("name"))
        return t.settings.get("validation", plugin.validation if plugin is not None else 0.0)

    out = [t if "validation" in t.settings or not share(t) else
           t.model_copy(update={"settings": {**t.settings, "validation": share(t)}}) for t in sections]
    by_network = {n: i for i, t in enumerate(sections) for n in t.networks}
    for t in sections:
        teacher = t.settings.get("procedure", {}).get("args", {}).get("teacher")
        i = by_network.get(teacher) if isinstance(teacher, str) else None
        if i is None or "validation" in sections[i].settings or not share(t):
            continue
        if settings_mod.held_out_source(t.settings) == settings_mod.held_out_source(sections[i].settings):
            out[i] = out[i].model_copy(update={"settings": {**out[i].settings, "validation": share(t)}})
    return out


def _section_networks(st: State, t: ir.Train, trained: dict[str, ir.Train], diags: list[Diagnostic]) -> bool:
    """Whether the networks a section names are fine (each known, listed once, trained once)."""
    ok = True
    for name in [n for i, n in enumerate(t.networks) if n in t.networks[:i]]:
        diags.append(diagnostic(f"network '{name}' is listed twice in this train section", t.span, width=len("train")))
        ok = False
    for name in dict.fromkeys(t.networks):
        if name not in st.networks:
            ok = False
            if name not in st.spec.networks:
                diags.append(diagnostic(f"train section names an unknown network '{name}'", t.span,
                                        width=len("train"), hint=did_you_mean(name, st.spec.networks)))
        elif name in trained:
            line = trained[name].span.line if trained[name].span else "?"
            diags.append(diagnostic(f"network '{name}' already has a train section (line {line})", t.span,
                                    width=len("train")))
            ok = False
        else:
            trained[name] = t
    return ok


def _unimplemented(t: ir.Train, values: dict) -> list[str]:
    return [f"{t.span}: procedure '{name}' is registered but not implemented in this version; 'train' will refuse "
            "it" if t.span else f"procedure '{name}' is not implemented in this version"
            for name in settings_mod.unimplemented(values)]


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, str):
        return str(v)
    return v
