"""Lowering templates (`block`) and shared modules: instances spliced into the network.

A template instance gets its own modules under the element's path; its errors carry a note
naming the use that caused them. A shared module's modules are declared once under its own
name and every use must agree on their arguments and input shapes.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING

from . import ir, signature
from .errors import did_you_mean
from .keys import ModuleKey
from .printer import format_expr
from .scope import Fail, fail
from .signature import BindError

if TYPE_CHECKING:
    from .lower import Ctx, Lowerer

#: How deeply templates and shared modules may use each other (a guard for Python's stack).
MAX_DEPTH = 64


def template(lw: "Lowerer", block: ir.Block, args, cur: str, ctx: "Ctx", at) -> str:
    """An instance of `block` applied to node `cur`; `at` is the element that names it."""
    if block.name in ctx.templates:
        raise fail(f"template '{block.name}' uses itself", at.span, hint="templates cannot be recursive")
    if len(ctx.templates) >= MAX_DEPTH:
        raise fail(f"templates and shared modules use each other more than {MAX_DEPTH} levels deep here", at.span,
                   hint="flatten the templates")
    bound = _arguments(lw, block, args, ctx, at)
    inner = ctx.but(params=bound, templates=ctx.templates + (block.name,))
    try:
        if block.pipe is not None:
            out = cur
            for i, el in enumerate(block.pipe.elements):
                out = lw.element(el, out, inner.but(path=f"{ctx.path}.{i}"))
            return out
        return _body(lw, block, cur, inner)
    except Fail as f:
        raise _noted(f, at) from None


def _noted(f: Fail, at, *also) -> Fail:
    """The failure of an instance, each diagnostic with a note naming the use `at` that
    caused it (a diagnostic that already points at the use, or at a span in `also`, needs none)."""
    if at.span is None:
        return f
    note = f"in `{format_expr(at)}` used at {at.span}"
    here = {(s.file, s.line, s.column) for s in (at.span, *also) if s is not None}
    return Fail(*(d if (d.filename, d.line, d.column) in here else d.with_note(note) for d in f.diags))


def _arguments(lw: "Lowerer", block: ir.Block, args, ctx: "Ctx", at) -> dict:
    """The template's parameters bound to the call's values, defaults filled in."""
    positional, keywords, spans = lw.arguments(args, ctx)
    names = [p.name for p in block.params]
    try:
        bound = signature.bind(names, [(None, v) for v in positional] + list(keywords.items()),
                               required=[p.name for p in block.params if p.default is None])
    except BindError as e:
        if e.kind == "too_many":
            raise fail(f"template '{block.name}' takes {len(names)} argument(s), got {len(positional)}", at.span,
                       hint=signature_of(block)) from None
        if e.kind == "unknown":
            raise fail(f"template '{block.name}' has no parameter '{e.name}'", spans[e.name],
                       hint=did_you_mean(e.name, names) or signature_of(block)) from None
        if e.kind == "twice":
            raise fail(f"parameter '{e.name}' of '{block.name}' is given twice", spans[e.name]) from None
        raise fail(f"template '{block.name}' needs the argument '{e.name}'", at.span,
                   hint=signature_of(block)) from None
    for p in block.params:
        if p.name not in bound:
            bound[p.name] = lw.value(p.default, ctx.but(params={}))
    return bound


def _body(lw: "Lowerer", block: ir.Block, cur: str, ctx: "Ctx") -> str:
    env: dict[str, str | None] = {}
    result = None
    for stmt in block.body or ():
        if isinstance(stmt, ir.Binding):
            if stmt.name in env:
                raise fail(f"duplicate name '{stmt.name}' in template '{block.name}'", stmt.span)
            mod = stmt.modifier if stmt.modifier in ("frozen", "trainable") else ctx.modifier
            sub = ctx.but(path=f"{ctx.path}.{stmt.name}", env=env, in_node=cur, modifier=mod,
                          role="adapter" if stmt.modifier == "adapter" else ctx.role)
            env[stmt.name] = lw.chain(stmt.chain, sub)
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


def shared(lw: "Lowerer", sh: ir.Shared, cur: str, ctx: "Ctx", el: ir.Element) -> str:
    """A use of shared module `sh` on node `cur`; `el` is the element that names it."""
    if sh.name in ctx.templates:
        raise fail(f"shared module '{sh.name}' uses itself", el.span, hint="shared modules cannot be recursive")
    if len(ctx.templates) >= MAX_DEPTH:
        raise fail(f"templates and shared modules use each other more than {MAX_DEPTH} levels deep here", el.span,
                   hint="flatten the templates")
    if sh.frozen and el.modifier == "trainable":  # a binding-wide `trainable` leaves it frozen
        raise fail(f"shared module '{sh.name}' is declared frozen and cannot be trainable here", el.span,
                   hint="drop 'frozen' from its declaration, or train a private copy of a network's binding")
    trainable = not sh.frozen and ctx.modifier != "frozen"
    out = cur
    ctx = ctx.but(templates=ctx.templates + (sh.name,))
    try:
        for i, e in enumerate(sh.pipe.elements):
            out = _shared_element(lw, sh, i, e, out, ctx, trainable, el)
    except Fail as f:
        raise _noted(f, el.target, el.span) from None
    return out


def _shared_element(lw: "Lowerer", sh: ir.Shared, i: int, e: ir.Element, cur: str, ctx: "Ctx", trainable: bool,
                    use: ir.Element) -> str:
    """Lower one element of a shared pipe as a local one, then move the modules it declared
    under the shared name and compare them with earlier uses (theirs must be the same)."""
    before, known = dict(lw.modules), len(lw.nodes)
    sub = ctx.but(path=f"__shared__.{sh.name}.{i}", role="shared", params={},
                  modifier="frozen" if not trainable else None)
    node = lw.element(e, cur, sub)
    new = {k: v for k, v in lw.modules.items() if k not in before or before[k] is not v}
    added = list(islice(reversed(lw.nodes.values()), len(lw.nodes) - known))
    prefix = f"{lw.net.name}.__shared__"
    for k, m in new.items():
        del lw.modules[k]
        key = ModuleKey(k).replace_prefix(prefix, "")
        m = m.model_copy(update={"key": key})
        old = lw.module(key)
        if old is not None and (old.op, old.args, old.in_shape) != (m.op, m.args, m.in_shape):
            raise fail(f"shared module '{sh.name}' is used with input {list(m.in_shape)} here but "
                       f"{list(old.in_shape)} elsewhere; its parameters would differ", use.span or e.span,
                       hint="a shared module needs the same input shape in every network")
        lw.modules[key] = old or m
        for n in added:
            if n["module"] == k:
                n["module"] = key
    return node


def signature_of(block: ir.Block) -> str:
    """`res(c, stride=1)`: a template's parameters, for hints."""
    parts = [p.name if p.default is None else f"{p.name}={format_expr(p.default)}" for p in block.params]
    return f"{block.name}({', '.join(parts)})"
