"""A traced graph of ops (`trace.Traced`) -> spec text a person could have written, and where
each torch module's weights go (`Written.keys`: torch module path -> compiled module key).

Layout:
- the model's own modules give the bindings: a run of leaf ops becomes one chain, split before
  a conv or linear layer when the chain has one already, and at every value read twice, by a
  merge, or returned; a binding is named after the module path it covers (`layer1.0.conv1`
  inside a template is `conv1`, `downsample.0` and `downsample.1` together are `downsample`,
  paths become names with `_`: `layer1_0`);
- a module class with two or more instances that each read one value and return one (a
  ResNet's BasicBlock) becomes a `block` template, one per distinct structure (`basic_block`
  and `basic_block_downsample` for the blocks without and with a downsample), whose arguments
  are the values that differ between instances (`c` for channels, `stride`, ...); a chain
  template is written as a pipe (`block name(c) = conv(...) -> batchnorm`);
- other user modules (containers like `nn.Sequential` always) are inlined, their bindings
  prefixed with their path.

Module keys follow the language reference, section 10: element `i` of binding `b` of network
`NET` is `NET.b.i`; inside a template at element `i`, element `j` of body binding `a` is
`NET.b.i.a.j` (pipe template: `NET.b.i.j`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from ..lower import python_reserved
from ..ops import MERGES, builtin_names, ops
from ..parser import KEYWORDS
from .templates import Binding, Body, Element, Template, binding_text, factor, instance_values, signature, \
    template_text
from .trace import Step, Traced, UnsupportedError

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class Group:
    """A user module (not a container) that some steps ran inside."""

    path: str
    type: type
    steps: list[Step] = field(default_factory=list)  # the steps directly inside it
    children: list["Group"] = field(default_factory=list)
    parent: "Group | None" = None
    inputs: list[str] = field(default_factory=list)  # values it reads from outside
    outputs: list[str] = field(default_factory=list)  # its values read outside (or returned)

    def all_steps(self) -> list[Step]:
        return self.steps + [s for c in self.children for s in c.all_steps()]

    def rel(self, path: str) -> str:
        return path[len(self.path) + 1:] if self.path else path

    @property
    def eligible(self) -> bool:
        """Can be a template: reads one value, returns one value."""
        return len(self.inputs) == 1 and len(self.outputs) == 1 and bool(self.all_steps())


@dataclass
class Written:
    text: str
    keys: dict[str, str]  # torch module path -> compiled module key
    templates: list[str]


def write(traced: Traced, network: str) -> Written:
    """The spec text of `traced` as network `network`, and its weights' module keys."""
    return _Writer(traced, network).run()


# ---------------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, traced: Traced, network: str):
        self.t = traced
        self.network = network
        self.root = _groups(traced)
        self.template_types = _template_types(self.root)
        self.template_of: dict[str, Template] = {}  # group path -> its template
        self.order: list[Template] = []
        self.in_progress: set[type] = set()
        self.taken = set(builtin_names()) | KEYWORDS | python_reserved() | {network}  # for templates

    def run(self) -> Written:
        body = self._body(self.root, template=False)
        keys: dict[str, str] = {}
        self._keys(body, self.network, keys)
        text = "\n\n".join([template_text(t) for t in self.order] + [self._network_text(body)]) + "\n"
        return Written(text, keys, [t.name for t in self.order])

    # scopes -> bindings ---------------------------------------------------------------------

    def _body(self, scope: Group, template: bool) -> Body:
        items = self._items(scope, scope)
        if template:
            names = {scope.inputs[0]: "in"}
            outputs = scope.outputs
        else:
            names = {v: v for v in self.t.inputs}
            outputs = self.t.outputs
        avoid = KEYWORDS | python_reserved() | {t.name for t in self.order} | {self.network}
        stateful = {scope.rel(s.module) for s in scope.all_steps() if s.module}
        return _Chains(items, names, outputs, scope, template, avoid, stateful).run()

    def _items(self, scope: Group, group: Group) -> list["_Item"]:
        items = [_Item(s, None, group) for s in group.steps]
        for child in group.children:
            t = self._template(child) if child.path in self.template_types.get(child.type, ()) else None
            if t is not None:
                items.append(_Item(None, child, group, t))
            else:
                items.extend(self._items(scope, child))
        order = {s.name: i for i, s in enumerate(self.t.steps)}
        return sorted(items, key=lambda it: order[it.last_step])

    # templates -------------------------------------------------------------------------------

    def _template(self, group: Group) -> Template | None:
        if group.path in self.template_of:
            return self.template_of[group.path]
        if group.type in self.in_progress:  # a class nested in itself: inline the inner ones
            return None
        self.in_progress.add(group.type)
        instances = [g for g in _walk(self.root) if g.path in self.template_types[group.type]]
        bodies = {g.path: self._body(g, template=True) for g in instances}
        self.in_progress.discard(group.type)
        by_shape: dict[tuple, list[Group]] = {}
        for g in instances:
            by_shape.setdefault(signature(bodies[g.path]), []).append(g)
        # the plainest structure (fewest child modules) takes the class's name, the others add theirs
        variants = sorted(by_shape.values(), key=lambda members: len(_children_used(members[0])))
        base = self._fresh(_snake(group.type.__name__))
        first_children = _children_used(variants[0][0])
        for i, members in enumerate(variants):
            name = base if i == 0 else self._fresh(_variant_name(base, members[0], first_children, i))
            t = factor(name, [bodies[g.path] for g in members])
            for g, values in zip(members, instance_values(t, [bodies[g.path] for g in members])):
                t.instances[g.path] = bodies[g.path]
                t.values[g.path] = values
                self.template_of[g.path] = t
            self.order.append(t)
        return self.template_of[group.path]

    def _fresh(self, name: str) -> str:
        return fresh_name(name, self.taken)

    # keys and text ---------------------------------------------------------------------------

    def _keys(self, body: Body, prefix: str, keys: dict[str, str], pipe: bool = False) -> None:
        for b in body.bindings:
            for i, el in enumerate(b.elements):
                key = f"{prefix}.{i}" if pipe else f"{prefix}.{b.name}.{i}"
                if el.kind == "op" and el.module is not None:
                    keys[el.module] = key
                elif el.kind == "call":
                    t = self.template_of[el.group.path]
                    self._keys(t.instances[el.group.path], key, keys, pipe=t.pipe)

    def _network_text(self, body: Body) -> str:
        inputs = ", ".join(f"{k}: [{', '.join(map(str, v))}]" for k, v in self.t.inputs.items())
        lines = [f"network {self.network}({inputs}) {{"]
        lines += [f"    {binding_text(b)}" for b in body.bindings]
        lines.append(f"    return {', '.join(body.outputs)}")
        return "\n".join(lines) + "\n}"


@dataclass
class _Item:
    """A step, or a template instance (a group read as one call), inside a scope."""

    step: Step | None
    group: Group | None
    owner: Group  # the (inlined) group it came from
    template: Template | None = None  # for a group

    @property
    def inputs(self) -> list[str]:
        return list(self.step.inputs) if self.step else list(self.group.inputs)

    @property
    def output(self) -> str:
        return self.step.name if self.step else self.group.outputs[0]

    @property
    def last_step(self) -> str:
        return self.step.name if self.step else self.group.outputs[0]

    @property
    def merge(self) -> bool:
        return self.step is not None and self.step.op in MERGES

    @property
    def weighted(self) -> bool:
        return self.step is not None and self.step.op in ("conv", "linear")


class _Chains:
    """Items of one scope -> bindings (see the module docstring for where chains split)."""

    def __init__(self, items: list[_Item], names: dict[str, str], outputs: list[str], scope: Group,
                 template: bool, taken: set[str], stateful: set[str]):
        self.items, self.names, self.outputs, self.scope, self.template = items, dict(names), outputs, scope, template
        self.stateful = stateful  # paths (from the scope) of every module with weights inside it
        self.used = set(names.values()) | taken
        self.readers: dict[str, int] = {}
        for it in items:
            for v in it.inputs:
                self.readers[v] = self.readers.get(v, 0) + 1
        for v in outputs:
            self.readers[v] = self.readers.get(v, 0) + 1

    def run(self) -> Body:
        bindings: list[Binding] = []
        current: list[_Item] = []
        for it in self._order():
            if current and self._extends(current, it):
                current.append(it)
                continue
            if current:
                bindings.append(self._close(current))
            current = [it]
        if current:
            bindings.append(self._close(current))
        missing = [v for v in self.outputs if v not in self.names]
        if missing:
            raise UnsupportedError(f"the outputs {missing} are not computed by any supported op")
        return Body(bindings, [self.names[v] for v in self.outputs])

    def _order(self) -> list[_Item]:
        """A topological order that continues the current chain when it can."""
        available = set(self.names)
        remaining = list(self.items)
        out: list[_Item] = []
        while remaining:
            ready = [it for it in remaining if all(v in available for v in it.inputs)]
            if not ready:
                raise UnsupportedError("the traced graph is not in an order this importer understands")
            last = out[-1].output if out else None
            pick = next((it for it in ready if not it.merge and it.inputs and it.inputs[0] == last), ready[0])
            remaining.remove(pick)
            out.append(pick)
            available.add(pick.output)
        return out

    def _extends(self, current: list[_Item], it: _Item) -> bool:
        tail = current[-1]
        return (not it.merge and it.step is not None and tail.step is not None and it.inputs == [tail.output]
                and self.readers.get(tail.output, 0) == 1 and tail.output not in self.outputs
                and it.owner is tail.owner and not (it.weighted and any(c.weighted for c in current)))

    def _close(self, items: list[_Item]) -> Binding:
        first = items[0]
        for v in first.inputs:
            if v not in self.names:
                raise UnsupportedError(f"internal: value '{v}' has no name")
        sources = [self.names[v] for v in first.inputs]
        merge = first.step.op if first.merge else None
        merge_args = dict(first.step.args) if merge else {}
        elements = [self._element(it) for it in (items[1:] if merge else items)]
        name = self._name(items)
        self.names[items[-1].output] = name
        return Binding(name, sources, elements, merge, merge_args)

    def _element(self, it: _Item) -> Element:
        if it.group is not None:
            t = it.template
            return Element("call", t.name, dict(zip(t.params, t.values[it.group.path])), group=it.group,
                           defaults=t.defaults)
        full = ops()[it.step.op].bind([], dict(it.step.args))
        return Element("op", it.step.op, full, module=it.step.module)

    def _name(self, items: list[_Item]) -> str:
        owner = self.scope.rel(items[0].owner.path) if items[0].owner is not self.scope else ""
        if items[0].group is not None:
            raw = self.scope.rel(items[0].group.path)
        else:
            weighted = [self.scope.rel(it.step.module) for it in items if it.step and it.step.module]
            if weighted:
                raw = _container(weighted, self.stateful)
                owner = ""  # a module path already names its owner
            elif self.template and items[-1].output in self.outputs:
                raw = "out"
            else:
                raw = (items[0].step.op if items[0].step else "block")
            if owner:
                raw = f"{owner}.{raw}"
        return self._unique(_identifier(raw, items))

    def _unique(self, name: str) -> str:
        return fresh_name(name, self.used)


# ---------------------------------------------------------------------------------------------
# Groups


def _groups(traced: Traced) -> Group:
    root = Group("", type(traced.model))
    by_path = {"": root}
    for step in traced.steps:
        parent = root
        for path, typ in step.scope:
            if issubclass(typ, CONTAINERS) or not path:
                continue
            if path not in by_path:
                g = Group(path, typ, parent=parent)
                by_path[path] = g
                parent.children.append(g)
            parent = by_path[path]
        parent.steps.append(step)
    for g in _walk(root):
        _interface(g, traced)
    return root


def _interface(g: Group, traced: Traced) -> None:
    inside = {s.name for s in g.all_steps()}
    reads = [v for s in g.all_steps() for v in s.inputs]
    g.inputs = list(dict.fromkeys(v for v in reads if v not in inside))
    outside_reads = {v for s in traced.steps if s.name not in inside for v in s.inputs} | set(traced.outputs)
    g.outputs = [s.name for s in g.all_steps() if s.name in outside_reads]


def _walk(g: Group):
    yield g
    for c in g.children:
        yield from _walk(c)


def _template_types(root: Group) -> dict[type, set[str]]:
    """Classes with two or more instances that can be templates -> those instances' paths."""
    by_type: dict[type, set[str]] = {}
    for g in _walk(root):
        if g is not root and g.eligible:
            by_type.setdefault(g.type, set()).add(g.path)
    return {t: paths for t, paths in by_type.items() if len(paths) >= 2}


def _children_used(g: Group) -> set[str]:
    return {g.rel(s.module).split(".")[0] for s in g.all_steps() if s.module}


def _variant_name(base: str, g: Group, first: set[str], i: int) -> str:
    extra = sorted(_children_used(g) - first)
    return f"{base}_{'_'.join(extra)}" if extra else f"{base}_{i + 1}"


def _snake(name: str) -> str:
    for word in ("ReLU", "GELU", "SiLU", "PReLU"):  # activations spelt in capitals read as one word
        name = name.replace(word, word.capitalize())
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    return _identifier(s, [])


def _identifier(raw: str, items: list[_Item]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw.replace(".", "_")) or "value"
    if name[0].isdigit():  # a path inside a Sequential: prefix the op of its (first weighted) module
        steps = [it.step for it in items if it.step is not None]
        first = next((s.op for s in steps if s.module), steps[0].op if steps else "layer")
        name = f"{first}{name}"
    return name


def _container(paths: list[str], stateful: set[str]) -> str:
    """The name of a binding holding the modules at `paths`: the container they share when the
    binding holds all of that container's modules (`downsample.0`, `downsample.1` ->
    `downsample`), else the first module's path."""
    parts = [p.split(".") for p in paths]
    common: list[str] = []
    for segs in zip(*parts):
        if len(set(segs)) != 1 or len(common) + 1 == min(len(p) for p in parts):
            break
        common.append(segs[0])
    prefix = ".".join(common)
    if prefix and {m for m in stateful if m.startswith(prefix + ".")} <= set(paths):
        return prefix
    return paths[0]


def fresh_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ... : the first not in `taken`, which it joins."""
    out, i = name, 2
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out
