"""The spec a writer builds, before it is text: bindings of elements (ops and template calls),
bodies, and templates factored from instances of one structure (`factor`): argument values
that differ between instances become the template's parameters. Then the text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..ops import ops
from ..parser import KEYWORDS

if TYPE_CHECKING:
    from .spec_writer import Group

# arguments named after what they usually mean in a template's parameter list
PARAM_NAMES = {"out": "c"}


@dataclass
class Param:
    """A template parameter, standing where the instances' argument values differ."""

    name: str


@dataclass
class Element:
    """One chain step: an op with its arguments, or a call of a template."""

    kind: str  # "op" or "call"
    name: str  # the op, or the template (calls)
    args: dict[str, Any]  # op: its arguments; call: the template's parameter values, in order
    module: str | None = None  # op: the torch module path holding its state
    group: Group | None = None  # call: the instance
    defaults: dict[str, Any] = field(default_factory=dict)  # call: the template's parameter defaults


@dataclass
class Binding:
    """`name = source -> elements`; the source is a value name or a merge of value names."""

    name: str
    sources: list[str]  # value names: one, or a merge's paths
    elements: list[Element]
    merge: str | None = None
    merge_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Body:
    """A network's or a template's bindings and what it returns."""

    bindings: list[Binding]
    outputs: list[str]  # binding (or input) names returned


@dataclass
class Template:
    """A `block` factored from instances of one structure, with each instance's values."""

    name: str
    params: list[str]
    body: Body  # with Param values where instances differ
    pipe: bool
    defaults: dict[str, Any] = field(default_factory=dict)  # parameter -> its default, where it has one
    positions: dict[tuple, Param] = field(default_factory=dict)  # argument position -> parameter
    instances: dict[str, Body] = field(default_factory=dict)  # group path -> its concrete body
    values: dict[str, list] = field(default_factory=dict)  # group path -> its parameter values


# ---------------------------------------------------------------------------------------------
# Factoring instances into a template


def signature(body: Body) -> tuple:
    """What instances of one template share: everything but argument values."""
    return (tuple((b.name, tuple(b.sources), b.merge, tuple(b.merge_args),
                   tuple((e.kind, e.name, tuple(e.args)) for e in b.elements)) for b in body.bindings),
            tuple(body.outputs))


def _slots(body: Body) -> list[tuple[tuple, Any]]:
    """Every argument value of a body with its position."""
    out = []
    for bi, b in enumerate(body.bindings):
        for k, v in b.merge_args.items():
            out.append(((bi, "merge", k), v))
        for ei, e in enumerate(b.elements):
            for k, v in e.args.items():
                out.append(((bi, ei, k), v))
    return out


def factor(name: str, bodies: list[Body]) -> Template:
    """One template for bodies of the same structure: differing argument values become
    parameters (positions with the same values in every instance share one)."""
    columns: dict[tuple, list] = {}
    for body in bodies:
        for pos, v in _slots(body):
            columns.setdefault(pos, []).append(v)
    params: dict[tuple, Param] = {}  # value vector -> parameter
    at: dict[tuple, Param] = {}
    taken: set[str] = set()
    for pos, vector in columns.items():
        if len(set(map(_key, vector))) == 1 and len(vector) == len(bodies):
            continue
        vec = tuple(map(_key, vector))
        if vec not in params:
            base = PARAM_NAMES.get(pos[-1], pos[-1])
            pname, i = base, 2
            while pname in taken or pname in KEYWORDS:
                pname, i = f"{base}{i}", i + 1
            taken.add(pname)
            params[vec] = Param(pname)
        at[pos] = params[vec]
    defaults = _defaults(bodies[0], at)
    # parameters without default first, channel counts leading; then those with a default
    ordered = sorted(params.values(), key=lambda p: (p.name in defaults, not p.name.startswith(PARAM_NAMES["out"])))
    body = _substitute(bodies[0], at)
    pipe = len(body.bindings) == 1 and body.bindings[0].merge is None and body.bindings[0].sources == ["in"]
    return Template(name, [p.name for p in ordered], body, pipe, defaults, at)


def _defaults(body: Body, at: dict[tuple, Param]) -> dict[str, Any]:
    """A parameter's default: the default of every argument it stands for, when they agree
    (`stride` of a conv: 1), so calls can leave it out."""
    seen: dict[str, list] = {}
    for (bi, ei, k), p in at.items():
        seen.setdefault(p.name, []).append(_arg_default(body, bi, ei, k))
    return {name: ds[0] for name, ds in seen.items()
            if not any(d is _NO_DEFAULT for d in ds) and len({_key(d) for d in ds}) == 1}


_NO_DEFAULT = object()


def _arg_default(body: Body, bi: int, ei, k: str):
    if ei == "merge":
        return 0 if k == "dim" else _NO_DEFAULT
    e = body.bindings[bi].elements[ei]
    if e.kind == "call":
        return e.defaults.get(k, _NO_DEFAULT)
    arg = next(a for a in ops()[e.name].args if a.name == k)
    return _NO_DEFAULT if arg.required or arg.default is None else arg.default


def _key(v):
    return (type(v).__name__, repr(v))


def _substitute(body: Body, at: dict[tuple, Param]) -> Body:
    bindings = []
    for bi, b in enumerate(body.bindings):
        merge_args = {k: at.get((bi, "merge", k), v) for k, v in b.merge_args.items()}
        elements = [Element(e.kind, e.name, {k: at.get((bi, ei, k), v) for k, v in e.args.items()}, e.module, e.group,
                            e.defaults) for ei, e in enumerate(b.elements)]
        bindings.append(Binding(b.name, b.sources, elements, b.merge, merge_args))
    return Body(bindings, body.outputs)


def instance_values(t: Template, bodies: list[Body]) -> list[list]:
    first_pos = {}
    for pos, p in t.positions.items():
        first_pos.setdefault(p.name, pos)
    out = []
    for body in bodies:
        slots = dict(_slots(body))
        out.append([slots[first_pos[name]] for name in t.params])
    return out


# ---------------------------------------------------------------------------------------------
# Text


def template_text(t: Template) -> str:
    listed = [f"{p}={_value(t.defaults[p])}" if p in t.defaults else p for p in t.params]
    params = f"({', '.join(listed)})" if t.params else ""
    if t.pipe:
        return f"block {t.name}{params} = {_chain(t.body.bindings[0].elements)}"
    lines = [f"block {t.name}{params} {{"]
    lines += [f"    {binding_text(b)}" for b in t.body.bindings]
    lines.append(f"    return {t.body.outputs[0]}")
    return "\n".join(lines) + "\n}"


def binding_text(b: Binding) -> str:
    if b.merge:
        extra = [f"{k}={_value(v)}" for k, v in b.merge_args.items() if not (k == "dim" and v == 0)]
        source = f"{b.merge}({', '.join(b.sources + extra)})"
    else:
        source = b.sources[0]
    chain = _chain(b.elements)
    return f"{b.name} = {source}" + (f" -> {chain}" if chain else "")


def _chain(elements: list[Element]) -> str:
    return " -> ".join(_element_text(e) for e in elements)


def _element_text(e: Element) -> str:
    if e.kind == "call":
        return _call_text(e.name, e.args, e.defaults)
    op = ops()[e.name]
    parts = []
    for a in op.args:
        v = e.args.get(a.name, a.default)
        if a.required:
            parts.append(_value(v))
        elif isinstance(v, Param) or v != a.default:
            parts.append(f"{a.name}={_value(v)}")
    return f"{e.name}({', '.join(parts)})" if parts else e.name


def _call_text(name: str, args: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The first argument positional (when it has no default), the others by name, those
    equal to their default left out."""
    parts = []
    for i, (p, v) in enumerate(args.items()):
        if p in defaults and not isinstance(v, Param) and _key(v) == _key(defaults[p]):
            continue
        parts.append(_value(v) if i == 0 and p not in defaults else f"{p}={_value(v)}")
    return f"{name}({', '.join(parts)})" if parts else name


def _value(v) -> str:
    if isinstance(v, Param):
        return v.name
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {v!r} in a spec")
