"""`compat`'s argument checks, and how it reads each trained network as an extractor plus
heads. Torch-free: `check` runs `validate`, and the procedure (`assembler.train.compat`) uses
the same functions at run time, so both agree on what a network's parts are.

A network of a compat section is read like this (`specs/digits/compat.net`):

    f = x -> extractor        the extractor: everything up to the binding the heads read
    y = f -> head(9)          the task head: the binding of the network's first output
    r = f -> rot              auxiliary heads: bindings that apply a shared module of `aux`
    d = f -> dcc

The task head and every auxiliary head must read the extractor's binding and nothing else,
so that any network's head can be put on any other network's extractor.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..keys import Key
from . import Problem

ROTATIONS = 4  # 0, 90, 180 and 270 degrees


@dataclass(frozen=True)
class Split:
    """One network read as extractor + heads: binding names."""

    network: str
    extractor: str  # the binding the heads read
    head: str  # the task head: the binding of the first output
    aux: dict[str, str]  # auxiliary head (shared module name) -> the binding that applies it


class SplitError(ValueError):
    """A network that cannot be read as extractor + heads; args[0] says why, `hint` what to do."""

    def __init__(self, message: str, hint: str | None = None, at: str = "procedure"):
        super().__init__(message)
        self.hint, self.at = hint, at  # at: the procedure argument it is about


def uses(key: str, module: str) -> bool:
    """Whether a module key belongs to the (shared) module `module`: `rot.0.4` to `rot`."""
    return Key(key).below(module) is not None


def _reads(net, binding: str) -> set[str]:
    """The bindings (other than itself) that a binding's nodes read."""
    own = {n.name for n in net.nodes if n.binding == binding}
    return {net.node(i).binding for n in net.nodes if n.binding == binding for i in n.inputs if i not in own}


def split_network(net, aux: list[str]) -> Split:
    """Read a checked network as extractor + task head + auxiliary heads, or raise SplitError."""
    if not net.outputs:
        raise SplitError(f"network '{net.name}' has no output to serve as its task head")
    head = net.node(net.outputs[0]).binding
    reads = _reads(net, head)
    if len(reads) != 1 or next(iter(reads)) in net.inputs:
        raise SplitError(f"the task head '{net.name}.{head}' must read one extractor binding, not "
                         f"{', '.join(sorted(reads)) or 'nothing'}",
                         hint=f"split it: f = x -> ... (the extractor), then {head} = f -> ... (the head)")
    extractor = next(iter(reads))
    found: dict[str, str] = {}
    for module in aux:
        bindings = sorted({n.binding for n in net.nodes if n.module and uses(n.module, module)})
        if not bindings:
            continue
        if len(bindings) > 1:
            raise SplitError(f"network '{net.name}' applies the auxiliary head '{module}' in "
                             f"{len(bindings)} bindings ({', '.join(bindings)}); it must apply it once")
        reads = _reads(net, bindings[0])
        if reads != {extractor} or any(not uses(n.module, module) for n in net.nodes
                                       if n.binding == bindings[0] and n.module):
            raise SplitError(f"'{net.name}.{bindings[0]}' must be the auxiliary head '{module}' applied to the "
                             f"extractor '{extractor}' that the task head '{head}' reads",
                             hint=f"write {bindings[0]} = {extractor} -> {module}")
        found[module] = bindings[0]
    return Split(net.name, extractor, head, found)


def head_size(nets: list, split_of: dict, module: str) -> int | None:
    """How many outputs an auxiliary head gives (None: not a vector)."""
    for net in nets:
        binding = split_of[net.name].aux.get(module)
        if binding is not None:
            shape = net.shape(binding)
            return shape[0] if len(shape) == 1 else None
    return None


def roles(aux: list[str], rotation: list[str] | None, common: int | None, sizes: dict[str, int | None]
          ) -> tuple[list[str], list[str]]:
    """(rotation heads, common-class heads) among the auxiliary heads, or SplitError. Without
    `rotation`, the heads with 4 outputs predict rotation; when the common classes are 4 as
    well that is ambiguous and `rotation` must say it. `common`: how many common classes (None:
    not known before the data is loaded)."""
    if rotation is not None:
        stray = [h for h in rotation if h not in aux]
        if stray:
            raise SplitError(f"'rotation' names {', '.join(stray)}, which 'aux' does not list",
                             hint="list every auxiliary head in aux; rotation says which of them predict rotation",
                             at="rotation")
        rot = list(rotation)
    else:
        four = [h for h in aux if sizes.get(h) == ROTATIONS]
        if four and common == ROTATIONS:
            raise SplitError(f"there are {ROTATIONS} common classes, so '{four[0]}' ({ROTATIONS} outputs) may predict "
                             f"rotation or the common classes", hint=f"say which heads predict rotation, e.g. "
                             f"rotation=[{four[0]}] (or rotation=[] for none)", at="aux")
        rot = four
    for h in rot:
        if sizes.get(h) != ROTATIONS:
            raise SplitError(f"the rotation head '{h}' must give {ROTATIONS} outputs (0, 90, 180, 270 degrees), "
                             f"not {_size(sizes.get(h))}", hint=f"end it with linear({ROTATIONS})",
                             at="rotation" if rotation is not None else "aux")
    dcc = [h for h in aux if h not in rot]
    for h in dcc:
        if common == 0:
            raise SplitError(f"the common-class head '{h}' needs classes that every task has, and there are none",
                             hint="list them in common=[...], or drop the head from aux", at="aux")
        if common is not None and sizes.get(h) != common:
            raise SplitError(f"the common-class head '{h}' must give one output per common class ({common}), "
                             f"not {_size(sizes.get(h))}", hint=f"end it with linear({common})", at="aux")
    return rot, dcc


def _size(n: int | None) -> str:
    return "a feature map" if n is None else str(n)


def digits_classes(call: dict) -> list[str] | None:
    """The class names a data call gives, when they are known without loading it (digits)."""
    if not isinstance(call, dict) or call.get("name") != "digits":
        return None
    args = call.get("args", {})
    if args.get("positive") is not None:
        return [f"not {args['positive']}", str(args["positive"])]
    return [str(c) for c in (args.get("classes") or range(10))]


def common_classes(common: list[int], names: list[list[str] | None]) -> list[str] | None:
    """The common classes by name: as given, or (common=[]) the classes every task has, in
    the first task's order; None when some task's classes are not known yet."""
    if common:
        return [str(c) for c in common]
    if any(n is None for n in names):
        return None
    return [c for c in names[0] if all(c in other for other in names[1:])]


def own_modules(net, checked_modules: dict) -> dict[str, tuple]:
    """A network's own modules (not shared, imported or another network's) by local path,
    with what makes their weights fit: op, arguments, input shape."""
    out = {}
    for n in net.nodes:
        if n.module and n.module.startswith(net.name + "."):
            d = checked_modules[n.module]
            out[n.module[len(net.name) + 1:]] = (d.op, tuple(sorted(d.args.items())), tuple(d.in_shape))
    return out


# -- the check ------------------------------------------------------------------------------------


def validate(settings: dict, scope) -> list[Problem]:
    """compat's checks against the section's checked networks (see the module docstring)."""
    args = settings["procedure"]["args"]
    nets = [scope.checked[n] for n in scope.trained if n in scope.checked]
    if len(scope.trained) < 2:
        return [Problem(f"compat makes several networks compatible; this section trains only "
                        f"{', '.join(scope.trained)}", "procedure", hint="train two or more: train a, b { ... }")]
    problems: list[Problem] = []
    data = settings.get("data")
    if data is not None and not isinstance(data, list):
        problems.append(Problem(f"compat trains {', '.join(scope.trained)} each on its own data, but 'data' gives one "
                                f"source", "data", hint="give one source per network: data = [a_source, b_source]"))
    try:
        splits = {n.name: split_network(n, args["aux"]) for n in nets}
    except SplitError as e:
        return problems + [Problem(str(e), e.at, e.hint)]
    problems += _aux_used(args["aux"], splits)
    problems += _shapes(nets, splits)
    names = [digits_classes(c) for c in data] if isinstance(data, list) else [None] * len(nets)
    problems += _common(args["common"], names, scope.trained, data if isinstance(data, list) else None)
    common = common_classes(args["common"], names)
    used = [h for h in args["aux"] if any(h in s.aux for s in splits.values())]
    sizes = {h: head_size(nets, splits, h) for h in used}
    try:
        rot, _ = roles(used, args.get("rotation"), None if common is None else len(common), sizes)
    except SplitError as e:
        problems.append(Problem(str(e), e.at, e.hint))
        rot = []
    for h in rot:
        for n in nets:
            if h in splits[n.name].aux and (shape := next(iter(n.inputs.values()), ())) and len(shape) == 3 \
                    and shape[1] != shape[2]:
                problems.append(Problem(f"rotation prediction needs square images, but {n.name}'s input is "
                                        f"{list(shape)}", "aux"))
    if args["iiw"]:
        problems += _identical(nets, scope.modules)
    return problems


def _aux_used(aux: list[str], splits: dict[str, Split]) -> list[Problem]:
    return [Problem(f"no trained network ({', '.join(splits)}) applies the auxiliary head '{h}'", "aux",
                    hint=f"apply it to each extractor, e.g. r = f -> {h}")
            for h in aux if not any(h in s.aux for s in splits.values())]


def _shapes(nets: list, splits: dict[str, Split]) -> list[Problem]:
    """Every head must be able to read every extractor: the extractors' features agree."""
    first = nets[0]
    want = first.shape(splits[first.name].extractor)
    out = []
    for n in nets[1:]:
        got = n.shape(splits[n.name].extractor)
        if got != want:
            e0, e1 = f"{first.name}.{splits[first.name].extractor}", f"{n.name}.{splits[n.name].extractor}"
            out.append(Problem(f"the extractors do not line up for recombination: {e0} gives {list(want)} but "
                               f"{e1} gives {list(got)}, so {n.name}'s head cannot read {first.name}'s features",
                               "procedure", hint="give every network's extractor the same output shape"))
    return out


def _common(common: list[int], names: list, trained, data) -> list[Problem]:
    out = []
    for c in common:
        for net, have, call in zip(trained, names, data or [None] * len(trained)):
            if have is not None and str(c) not in have:
                out.append(Problem(f"common class {c} is not a class of {net}'s data ({_call(call)} has "
                                   f"{', '.join(have)})", "common",
                                   hint="common lists classes that every network's data has"))
    if len(set(common)) != len(common):
        out.append(Problem(f"common={common} names a class twice", "common"))
    return out


def _call(call) -> str:
    args = ", ".join(f"{k}={'true' if v is True else v}" for k, v in call.get("args", {}).items()
                     if v not in (None, False) and (k, v) != ("split", "train"))
    return f"{call['name']}({args})"


def _identical(nets: list, modules: dict) -> list[Problem]:
    """IIW copies the first network's own weights into the others: same modules, same shapes."""
    first = own_modules(nets[0], modules)
    out = []
    for n in nets[1:]:
        other = own_modules(n, modules)
        diff = sorted(set(first) ^ set(other)) or [k for k in first if first[k] != other[k]]
        if diff:
            k = diff[0]
            a = f"{nets[0].name}.{k} is {_decl(first.get(k))}"
            b = f"{n.name}.{k} is {_decl(other.get(k))}"
            out.append(Problem(f"iiw needs identical architectures: {a} but {b}", "iiw",
                               hint="give the networks the same layers, or drop iiw"))
    return out


def _decl(d) -> str:
    if d is None:
        return "missing"
    op, args, shape = d
    return f"{op}({', '.join(f'{k}={v}' for k, v in args)}) on {list(shape)}"
