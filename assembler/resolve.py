"""The checking pipeline: a syntax `Spec` -> a `Checked` program, or every error found.

The passes run in the order of `PASSES`, each a function from the pipeline's `State` to a
new one (passes.py):

  load_imports        `use` statements -> checked imported specs (cycles detected)
  check_names         top-level names: duplicates, keywords, built-ins, reserved names
  order_networks      same-file references -> dependency order (and the definitions used)
  unused_definitions  element names of templates and shared modules no network uses
  lower_networks      `skips` expanded (skips.py), then bindings -> op graphs (lower.py)
  check_limits        the parameters of all modules together within the limit
  check_matches       `match` edges: weightings, endpoints and shapes
  check_trains        `train` sections against the plug-in registries (settings.py)
"""

from __future__ import annotations

import os
from pathlib import Path

from . import imports, ir
from .parser import gc_paused
from .errors import CheckError, Diagnostic, SpecError, diagnostic, suggestion_budget
from .graph import Checked
from .imports import CHECKPOINT_SPEC, Refused
from .passes import (State, check_limits, check_matches, check_names, check_trains, lower_networks, order_networks,
                     unused_definitions)
from .scope import Limits
from .visit import references as _references  # noqa: F401 - the trainer's import path

__all__ = ["CHECKPOINT_SPEC", "PASSES", "Limits", "check", "expand", "load", "read"]


def load(path: str | os.PathLike, limits: Limits | None = None) -> ir.Spec:
    """Read, parse and check a spec file (or a checkpoint directory's spec). Raises SpecError."""
    spec = read(path)
    check(spec, limits)
    return spec


def read(path: str | os.PathLike) -> ir.Spec:
    """Read and parse a spec file, or the `spec.net` of a checkpoint directory (see imports.py
    for the limits on what is read)."""
    return imports.read(path)


def check(spec: ir.Spec, limits: Limits | None = None) -> Checked:
    """Run every pass; raise a CheckError listing all independent errors. `limits` bounds the
    size of what is checked (default: `Limits()`)."""
    return _checked(_run(spec, (), limits or Limits(), PASSES))


def _checked(st: State) -> Checked:
    return Checked.model_construct(
        filename=st.spec.filename, networks=st.networks, modules=st.modules, edges=st.edges, trains=st.trains,
        imports={a: i.path for a, i in st.imports.items()}, warnings=st.warnings,
        imported={a: i.checked for a, i in st.imports.items() if i.checked is not None})


def expand(spec: ir.Spec) -> ir.Spec:
    """The spec with every macro (`skips`) expanded, as the compiler sees it."""
    st = _run(spec, (), Limits(), PASSES[: PASSES.index(lower_networks) + 1])
    items = tuple(st.expanded.get(i.name, i) if isinstance(i, ir.Network) else i for i in spec.items)
    return spec.model_copy(update={"items": items})


def _run(spec: ir.Spec, stack: tuple[str, ...], limits: Limits, passes) -> State:
    if not stack:
        suggestion_budget()  # (imports share their importer's)
    with gc_paused():  # many small acyclic objects: the collector's passes would only cost time
        try:
            st = State(spec=spec, stack=stack, limits=limits)
            for p in passes:
                st = p(st)
        except RecursionError:
            raise CheckError(Diagnostic("the spec nests merges, templates or references too deeply to check",
                                        spec.filename, hint="split deeply nested expressions into separate bindings",
                                        source=spec.text)) from None
        if st.diags:
            raise CheckError(_sorted(spec, st.diags))
    return st


def _sorted(spec: ir.Spec, diags) -> list[Diagnostic]:
    """The diagnostics with the spec's text attached, importing file first, by place, once each."""
    text = spec.text
    diags = [d if d.source is not None or d.filename != spec.filename or text is None
             else Diagnostic(d.message, d.filename, d.line, d.column, d.width, d.hint, text, d.notes) for d in diags]
    diags.sort(key=lambda d: (d.filename != spec.filename, d.filename, d.line, d.column))
    seen, out = set(), []
    for d in diags:
        key = (d.filename, d.line, d.column, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# Imports


_import_cache: dict[tuple[str, float, Limits], tuple[ir.Spec, Checked]] = {}


def load_imports(st: State) -> State:
    """`use` statements -> checked imported specs; an import with errors reports them under a
    note at its `use`, and references to it report nothing more."""
    out, failed, diags = {}, set(), []
    here = imports.self_path(st.spec)
    for use in st.spec.uses:
        if use.alias in out or use.alias in failed:
            continue  # check_names reports the duplicate
        try:
            target, resolved = imports.target_of(st.spec, use)
            resolved = str(resolved)
            _no_cycle(st.stack, here, resolved, use)
            checked = _import(target, resolved, st.stack + ((here,) if here else ()), use, st.limits)
        except Refused as r:
            failed.add(use.alias)
            diags += r.diags
            continue
        out[use.alias] = imports.imported(use.alias, resolved, checked)
    return st.report(diags, imports=out, failed=st.failed | frozenset(failed))


def _no_cycle(stack: tuple[str, ...], here: str | None, resolved: str, use: ir.Use) -> None:
    if resolved in stack or resolved == here:
        around = (here,) if here and here != resolved else ()
        start = stack.index(resolved) if resolved in stack else len(stack)
        chain = " -> ".join(Path(p).name for p in stack[start:] + around + (resolved,))
        raise Refused(diagnostic(f"import cycle: {chain}", use.span,
                                 hint="a spec cannot import itself, directly or through others"))


def _import(target: Path, resolved: str, stack: tuple[str, ...], use: ir.Use, limits: Limits) -> Checked:
    try:
        key = (resolved, Path(resolved).stat().st_mtime, limits)
    except (ValueError, OSError) as e:
        raise Refused(diagnostic(f"cannot read the import '{use.path}': {e}", use.span)) from None
    if key not in _import_cache:
        try:
            spec = read(target)
            _import_cache[key] = (spec, check_imported(spec, stack, limits))
        except SpecError as e:
            raise Refused(diagnostic(f"the spec imported as '{use.alias}' has errors", use.span),
                          *e.diagnostics) from None
    return _import_cache[key][1]


def check_imported(spec: ir.Spec, stack: tuple[str, ...], limits: Limits | None = None) -> Checked:
    """Check a spec that others import (`stack`: the importing specs, for cycles)."""
    return _checked(_run(spec, stack, limits or Limits(), PASSES))


PASSES = (load_imports, check_names, order_networks, unused_definitions, lower_networks, check_limits, check_matches,
          check_trains)
