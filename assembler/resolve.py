"""The checking pipeline: a syntax `Spec` -> a `Checked` program, or every error found.

Passes, in order, each a function of what the earlier ones produced:
  load_imports      `use` statements -> checked imported specs (cycles detected)
  check_names       top-level names: duplicates, keywords, built-ins
  order_networks    same-file references -> dependency order
  expand_macros     `skips` -> gates with proxies (through `edits.add_skips`)
  lower_network     bindings -> op graphs with shapes (lower.py)
  check_matches     `match` edges: endpoints and shapes
  check_trains      `train` sections against the plug-in registries (settings.py)
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import networkx as nx

from . import ir
from .errors import CheckError, Diagnostic, SpecError, diagnostic, did_you_mean, word_span
from .graph import Checked, CheckedNetwork, Edge, TrainSection
from .lower import Fail, Imported, Scope, lower_network, name_problem
from .ops import builtin_names
from .parser import KEYWORDS, parse
from . import settings as settings_mod

WEIGHTINGS = {"l2": (), "fitnet": (), "attention": (), "meta": ("hidden", "where")}
FLAG_OPTIONS = {"where"}  # weighting options that take true or false (the others: whole numbers >= 0)
CHECKPOINT_SPEC = "spec.net"


def load(path: str | os.PathLike) -> ir.Spec:
    """Read, parse and check a spec file (or a checkpoint directory's spec). Raises SpecError."""
    spec = read(path)
    check(spec)
    return spec


def read(path: str | os.PathLike) -> ir.Spec:
    """Read and parse a spec file, or the `spec.net` of a checkpoint directory."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_SPEC
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if Path(path).is_dir():
            raise SpecError(Diagnostic(f"{path} is a directory without {CHECKPOINT_SPEC}", str(path),
                                       hint="give a .net file or a checkpoint directory")) from None
        raise SpecError(Diagnostic(f"no such file: {path}", str(path), hint="check the path")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(Diagnostic(f"cannot read {path}: {e}", str(path))) from None
    return parse(text, str(p) if p.is_absolute() else os.path.relpath(p))


def check(spec: ir.Spec) -> Checked:
    """Run every pass; raise a CheckError listing all independent errors."""
    collecting = gc.isenabled()
    gc.disable()  # many small acyclic objects: the collector's passes would only cost time
    try:
        return _check(spec, ())
    except RecursionError:
        raise CheckError(Diagnostic("the spec nests merges, templates or references too deeply to check",
                                    spec.filename, hint="split deeply nested expressions into separate bindings",
                                    source=spec.text)) from None
    finally:
        if collecting:
            gc.enable()


def expand(spec: ir.Spec) -> ir.Spec:
    """The spec with every macro (`skips`) expanded, as the compiler sees it."""
    return _Checker(spec, ()).run(return_spec=True)


_import_cache: dict[tuple[str, float], tuple[ir.Spec, Checked]] = {}


def _check(spec: ir.Spec, stack: tuple[str, ...]) -> Checked:
    return _Checker(spec, stack).run()


class _Checker:
    def __init__(self, spec: ir.Spec, stack: tuple[str, ...]):
        self.spec = spec
        self.stack = stack
        self.diags: list[Diagnostic] = []
        self.warnings: list[str] = []

    def run(self, return_spec: bool = False):
        spec = self.spec
        imports = self.load_imports()
        self.check_names()
        scope = Scope(blocks=spec.blocks, shared=spec.shared, networks={}, imports=imports, modules={},
                      failed=set(self.failed_imports), text=spec.text, network_names=frozenset(spec.networks))
        networks: dict[str, CheckedNetwork] = {}
        expanded = dict(spec.networks)
        for name in self.order_networks():
            net = spec.networks[name]
            if any(isinstance(s, ir.Skips) for s in net.body):
                done = self.expand_macros(net, scope)
                # on a bad `skips`, check the rest of the network without it (no cascade of errors)
                net = done if done is not None else net.model_copy(update={"body": tuple(
                    s for s in net.body if not isinstance(s, ir.Skips))})
                expanded[name] = net
            checked, diags = lower_network(net, scope)
            self.diags.extend(diags)
            networks[name] = scope.networks[name] = checked
        if return_spec:
            self._raise()
            items = tuple(expanded.get(i.name, i) if isinstance(i, ir.Network) else i for i in spec.items)
            return spec.model_copy(update={"items": items})
        edges = self.check_matches(scope)
        trains = self.check_trains(scope)
        self._raise()
        return Checked.model_construct(
            filename=spec.filename, networks=networks, modules=dict(scope.modules), edges=tuple(edges),
            trains=tuple(trains), imports={a: i.path for a, i in imports.items()}, warnings=tuple(self.warnings))

    def _raise(self):
        if self.diags:
            text = getattr(self.spec, "text", None)
            diags = [d if d.source is not None or d.filename != self.spec.filename or text is None
                     else Diagnostic(d.message, d.filename, d.line, d.column, d.width, d.hint, text)
                     for d in self.diags]
            diags.sort(key=lambda d: (d.filename != self.spec.filename, d.filename, d.line, d.column))
            raise CheckError(_dedupe(diags))

    # -- imports ---------------------------------------------------------------------------------

    def base_dir(self) -> Path:
        name = self.spec.filename
        return Path(name).parent if name and not name.startswith("<") else Path.cwd()

    def load_imports(self) -> dict[str, Imported]:
        out: dict[str, Imported] = {}
        self.failed_imports = []
        for use in self.spec.uses:
            if use.alias in out:
                continue  # check_names reports the duplicate
            try:
                path = self.base_dir() / use.path
                target = path / CHECKPOINT_SPEC if path.is_dir() else path
                found = target.is_file()
                resolved_target = target.resolve()
            except (ValueError, OSError) as e:
                self.failed_imports.append(use.alias)
                self.diags.append(diagnostic(f"cannot use the path {use.path!r}: {e}", use.span,
                                             hint="give the path of a .net file or a checkpoint directory"))
                continue
            if not found:
                self.failed_imports.append(use.alias)
                msg = (f"checkpoint directory '{use.path}' has no spec.net (looked at {resolved_target})"
                       if path.is_dir() else f"cannot find '{use.path}' (looked at {resolved_target})")
                self.diags.append(diagnostic(msg, use.span, hint="paths in 'use' are relative to the importing file"))
                continue
            resolved = str(target.resolve())
            if resolved in self.stack or resolved == self._self_path():
                here = (self._self_path(),) if self._self_path() and self._self_path() != resolved else ()
                start = self.stack.index(resolved) if resolved in self.stack else len(self.stack)
                chain = " -> ".join(Path(p).name for p in self.stack[start:] + here + (resolved,))
                self.diags.append(diagnostic(f"import cycle: {chain}", use.span,
                                             hint="a spec cannot import itself, directly or through others"))
                continue
            try:
                spec, checked = self._import(target, resolved)
            except (ValueError, OSError) as e:
                self.failed_imports.append(use.alias)
                self.diags.append(diagnostic(f"cannot read the import '{use.path}': {e}", use.span))
                continue
            except SpecError as e:
                self.failed_imports.append(use.alias)
                self.diags.append(diagnostic(f"the spec imported as '{use.alias}' has errors", use.span))
                self.diags.extend(e.diagnostics)
                continue
            nets = checked.networks
            out[use.alias] = Imported(alias=use.alias, path=resolved, networks=nets, modules=checked.modules,
                                      single=next(iter(nets)) if len(nets) == 1 else None)
        return out

    def _self_path(self) -> str | None:
        name = self.spec.filename
        return str(Path(name).resolve()) if name and not name.startswith("<") else None

    def _import(self, target: Path, resolved: str) -> tuple[ir.Spec, Checked]:
        key = (resolved, target.stat().st_mtime)
        if key not in _import_cache:
            spec = read(target)
            stack = self.stack + ((self._self_path(),) if self._self_path() else ())
            _import_cache[key] = (spec, _check(spec, stack))
        return _import_cache[key]

    # -- names ---------------------------------------------------------------------------------

    def check_names(self) -> None:
        seen: dict[str, ir.Node] = {}
        builtins = builtin_names()
        for item in self.spec.items:
            name = getattr(item, "alias", None) or getattr(item, "name", None)
            if name is None:
                continue
            what = {"Use": "an import", "Block": "a template", "Shared": "a shared module",
                    "Network": "a network"}[type(item).__name__]
            at = self._name_span(item, name)
            problem = name_problem(name, what, builtins)
            if problem:
                self.diags.append(diagnostic(problem[0], at, hint=problem[1]))
            if name in seen:
                first = seen[name].span
                where = f" (first defined on line {first.line})" if first else ""
                self.diags.append(diagnostic(f"duplicate name '{name}'{where}", at))
            else:
                seen[name] = item
            if isinstance(item, ir.Block):
                self._check_params(item)

    def _name_span(self, item, name: str):
        keyword = {"Use": None, "Block": "block", "Shared": "shared", "Network": "network"}[type(item).__name__]
        if keyword is None:  # use "path" as NAME: the name is the last word
            span = item.span
            line = (self.spec.text or "").split("\n")[span.line - 1] if span and self.spec.text else ""
            skip = max(0, line.rfind(" as ") + 4 - (span.column - 1)) if " as " in line else 0
            return word_span(span, name, self.spec.text, skip)
        text = self.spec.text or ""
        span = item.span
        if span is None or not text:
            return span
        line = text.split("\n")[span.line - 1]
        k = line.find(keyword, span.column - 1)
        return word_span(span, name, text, (k - span.column + 1 + len(keyword)) if k >= 0 else 0)

    def _check_params(self, block: ir.Block) -> None:
        seen = set()
        for p in block.params:
            span = p.span or block.span
            if p.name in KEYWORDS:
                self.diags.append(diagnostic(f"'{p.name}' is a keyword and cannot name a parameter", span,
                                             width=len(p.name), hint="choose another name"))
            if p.name in seen:
                self.diags.append(diagnostic(f"parameter '{p.name}' of template '{block.name}' is declared twice",
                                             span, width=len(p.name)))
            seen.add(p.name)

    def order_networks(self) -> list[str]:
        nets = self.spec.networks
        defs = {**{b.name: b for b in self.spec.blocks.values()}, **self.spec.shared}
        g = nx.DiGraph()
        g.add_nodes_from(nets)
        for name, net in nets.items():
            for head in _network_deps(net, defs):
                if head in nets and head != name:
                    g.add_edge(head, name)
        try:
            return list(nx.lexicographical_topological_sort(g, key=list(nets).index))
        except nx.NetworkXUnfeasible:
            cycle = [a for a, _ in nx.find_cycle(g)]
            self.diags.append(diagnostic(f"networks refer to each other in a cycle: {' -> '.join(cycle + cycle[:1])}",
                                         nets[cycle[0]].span, width=len("network")))
            return [n for n in nets if n not in cycle]

    # -- macros ----------------------------------------------------------------------------------

    def expand_macros(self, net: ir.Network, scope: Scope) -> ir.Network | None:
        from .edits import expand_skips
        try:
            return expand_skips(net, scope)
        except Fail as f:
            self.diags.extend(f.diags)
            return None

    # -- matches and trains ----------------------------------------------------------------------

    def _endpoint(self, ref: ir.Ref, scope: Scope) -> tuple[int, ...] | None:
        head = ref.parts[0]
        if head in scope.failed:
            return None
        if len(ref.parts) == 1 and (head in scope.networks or head in scope.imports):
            self.diags.append(diagnostic(f"match endpoint '{head}' names a network, not a binding", ref.span,
                                         hint=f"write {head}.BINDING"))
            return None
        if head in scope.networks and len(ref.parts) != 2:
            self.diags.append(diagnostic(f"'{ref.dotted}' must name one binding of a network", ref.span,
                                         hint=f"write {head}.BINDING"))
            return None
        if head in scope.networks and len(ref.parts) == 2:
            net = scope.networks[head]
        elif head in scope.imports:
            imp = scope.imports[head]
            rest = ref.parts[1:]
            if len(rest) == 2 and rest[0] in imp.networks:
                net, ref_binding = imp.networks[rest[0]], rest[1]
                return self._shape_of(net, ref_binding, ref)
            if len(rest) == 1 and imp.single:
                return self._shape_of(imp.networks[imp.single], rest[0], ref)
            self.diags.append(diagnostic(f"'{ref.dotted}' names no binding of '{head}'", ref.span,
                                         hint="write ALIAS.BINDING, or ALIAS.NETWORK.BINDING"))
            return None
        else:
            known = list(scope.networks) + list(scope.imports)
            hint = did_you_mean(head, known) or "a match endpoint is NETWORK.BINDING"
            self.diags.append(diagnostic(f"unknown network '{head}' in match endpoint '{ref.dotted}'", ref.span,
                                         hint=hint))
            return None
        return self._shape_of(net, ref.parts[1], ref)

    def _shape_of(self, net: CheckedNetwork, binding: str, ref: ir.Ref):
        if binding in net.failed:
            return None
        if binding not in net.bindings:
            self.diags.append(diagnostic(f"network '{net.name}' has no binding '{binding}'", ref.span,
                                         hint=did_you_mean(binding, net.bindings)))
            return None
        return net.shape(binding)

    def check_matches(self, scope: Scope) -> list[Edge]:
        edges = []
        for m in self.spec.matches:
            w = m.weighting
            wname = w.dotted if isinstance(w, ir.Ref) else w.ref.dotted
            options = {}
            if wname not in WEIGHTINGS:
                self.diags.append(diagnostic(f"unknown weighting '{wname}'", w.span,
                                             hint=did_you_mean(wname, WEIGHTINGS) or
                                             f"weightings are: {', '.join(WEIGHTINGS)}"))
                continue
            if isinstance(w, ir.Call):
                for a in w.args:
                    if a.name not in WEIGHTINGS[wname]:
                        self.diags.append(diagnostic(f"weighting '{wname}' has no option '{a.name or 'positional'}'",
                                                     a.span, hint=f"it takes: {', '.join(WEIGHTINGS[wname]) or 'none'}"))
                        continue
                    if a.name in FLAG_OPTIONS:
                        if not isinstance(a.value, ir.Bool):
                            self.diags.append(diagnostic(f"'{a.name}' must be true or false", a.value.span))
                            continue
                        options[a.name] = a.value.value
                        continue
                    value = a.value.value if isinstance(a.value, ir.Number) else None
                    if not isinstance(value, int) or value < 0:
                        self.diags.append(diagnostic(f"'{a.name}' must be a whole number >= 0", a.value.span))
                        continue
                    options[a.name] = value
            for pair in m.edges():
                s, t = self._endpoint(pair.source, scope), self._endpoint(pair.target, scope)
                if s is None or t is None:
                    continue
                if wname == "l2" and s != t:
                    self.diags.append(diagnostic(
                        f"'l2' matching needs equal shapes: {pair.source.dotted} is {list(s)}, "
                        f"{pair.target.dotted} is {list(t)}", pair.span or m.span,
                        hint="use 'fitnet' (a trainable 1x1 regressor) between shapes that differ"))
                    continue
                if wname != "l2" and (len(s) != 3 or len(t) != 3):
                    self.diags.append(diagnostic(
                        f"'{wname}' matching needs feature maps [C, H, W]: {pair.source.dotted} is {list(s)}, "
                        f"{pair.target.dotted} is {list(t)}", pair.span or m.span))
                    continue
                edges.append(Edge(source=pair.source.dotted, target=pair.target.dotted, source_shape=s,
                                  target_shape=t, weighting=wname, options=options, span=pair.span or m.span))
        return edges

    def check_trains(self, scope: Scope) -> list[TrainSection]:
        out = []
        trained: dict[str, ir.Train] = {}
        imported = set()
        for alias, imp in scope.imports.items():
            imported |= {f"{alias}.{n}" for n in imp.networks}
            if imp.single:
                imported.add(alias)
        for t in self.spec.trains:
            ok = True
            for name in [n for i, n in enumerate(t.networks) if n in t.networks[:i]]:
                self.diags.append(diagnostic(f"network '{name}' is listed twice in this train section", t.span,
                                             width=len("train")))
                ok = False
            for name in dict.fromkeys(t.networks):
                if name not in scope.networks:
                    ok = False
                    if name not in self.spec.networks:
                        self.diags.append(diagnostic(f"train section names an unknown network '{name}'", t.span,
                                                     width=len("train"),
                                                     hint=did_you_mean(name, self.spec.networks)))
                elif name in trained:
                    self.diags.append(diagnostic(f"network '{name}' already has a train section (line "
                                                 f"{trained[name].span.line if trained[name].span else '?'})", t.span,
                                                 width=len("train")))
                    ok = False
                else:
                    trained[name] = t
            sscope = settings_mod.SectionScope(
                networks=set(self.spec.networks), imported=imported, shared=set(self.spec.shared),
                bindings={n: set(scope.networks[n].bindings) for n in t.networks if n in scope.networks},
                trained=t.networks, checked=_named_networks(scope), modules=scope.modules)
            values, spans, diags = settings_mod.check_train(t, sscope)
            self.diags.extend(diags)
            if ok and not diags:
                for name in settings_mod.unimplemented(values):
                    self.warnings.append(f"{t.span}: procedure '{name}' is registered but not implemented in this "
                                         "version; 'train' will refuse it" if t.span else
                                         f"procedure '{name}' is not implemented in this version")
                out.append(TrainSection(networks=t.networks, settings=_jsonable(values), span=t.span,
                                        spans={k: v for k, v in spans.items() if v is not None}))
        return out


def _named_networks(scope: Scope) -> dict[str, CheckedNetwork]:
    """Every checked network by the name a setting uses: `net`, `alias.net`, `alias` (one network)."""
    out = dict(scope.networks)
    for alias, imp in scope.imports.items():
        out.update({f"{alias}.{n}": net for n, net in imp.networks.items()})
        if imp.single:
            out[alias] = imp.networks[imp.single]
    return out


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, str):
        return str(v)
    return v


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        key = (d.filename, d.line, d.column, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _network_deps(net: ir.Network, defs: dict) -> set[str]:
    """Heads of the dotted references a network makes, also through the templates and shared
    modules it uses (transitively)."""
    heads, seen, todo = set(), set(), [net]
    while todo:
        item = todo.pop()
        for ref in _references(item):
            heads.add(ref.parts[0])
        for used in _used_names(item):
            if used in defs and used not in seen:
                seen.add(used)
                todo.append(defs[used])
    return heads


def _used_names(item) -> set[str]:
    """Single names a network, template or shared module uses as elements."""
    out = set()

    def walk(e):
        if isinstance(e, ir.Chain):
            if e.source is not None:
                walk(e.source)
            for el in e.elements:
                t = el.target
                ref = t.ref if isinstance(t, ir.Call) else t
                if isinstance(ref, ir.Ref) and len(ref.parts) == 1:
                    out.add(ref.parts[0])
                walk(t)
        elif isinstance(e, ir.Call):
            for a in e.args:
                walk(a.value)
    for chain in _chains(item):
        walk(chain)
    return out


def _chains(item):
    if isinstance(item, ir.Shared):
        return [item.pipe]
    if isinstance(item, ir.Block):
        return [item.pipe] if item.pipe is not None else [s.chain for s in item.body or () if isinstance(s, ir.Binding)]
    return [s.chain for s in item.body if isinstance(s, ir.Binding)]


def _references(net):
    """Every dotted reference in a network's chains (elements, ranges, copies)."""
    def walk(e):
        if isinstance(e, ir.Chain):
            if e.source is not None:
                yield from walk(e.source)
            for el in e.elements:
                yield from walk(el.target)
        elif isinstance(e, ir.Range):
            yield e.start
        elif isinstance(e, ir.Ref):
            if len(e.parts) > 1:
                yield e
        elif isinstance(e, ir.Call):
            for a in e.args:
                yield from walk(a.value)
    for chain in _chains(net):
        yield from walk(chain)
