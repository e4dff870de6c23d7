"""What an entry of the op table is (`Op`, `Merge`, `Arg`): the types that the table
(`ops.py`) and the built-in entries (`builtin_ops.py`) share.

The op table: every op and merge the language knows, as one torch-free entry each.

An entry says what the front end and the tools need: the arguments, the output shape, the
parameter and FLOP counts, the text a picture shows (`label`) and how the spec generator of
`assembler.testing` draws valid arguments (`sample`). The torch side attaches a lowering to
the same name (`assembler.lowerings.register_lowering`); nothing here imports torch.

Installed packages add entries through the `assembler.ops` entry-point group or
`register_op`; a spec never names Python code. The built-in entries live in
`builtin_ops.py`. Shapes leave out the batch dimension; FLOPs are multiply-accumulates per
sample of the forward pass (the unit of the papers' tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from . import signature
from .signature import BindError, show

Shape = tuple[int, ...]


class OpError(Exception):
    """A bad argument or input shape. `arg` names the argument at fault, `path` the merge
    path at fault (its index), if any; the lowering points the caret there."""

    def __init__(self, message: str, arg: str | None = None, hint: str | None = None, path: int | None = None):
        super().__init__(message)
        self.arg = arg
        self.hint = hint
        self.path = path


class Chooser(Protocol):
    """What a `sample` function may ask of the spec generator (Hypothesis-driven or seeded):
    each draw shrinks towards its first or lowest choice. `max_spatial`, `max_channels` and
    `max_numel` bound the sizes it wants."""

    max_spatial: int
    max_channels: int
    max_numel: int

    def integer(self, lo: int, hi: int) -> int: ...
    def pick(self, seq) -> Any: ...
    def boolean(self) -> bool: ...
    def chance(self, p: float) -> bool: ...
    def floating(self, lo: float, hi: float, exclude_max: bool = False) -> float: ...


@dataclass(frozen=True)
class Arg:
    """One argument of an op or merge: its name, kind (int, float, bool, str, list or a tuple
    of them), default (`...`: required) and an extra value check (see `signature`)."""

    name: str
    kind: type | tuple[type, ...]
    default: Any = ...
    check: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is ...


def _same(s: Shape, a: dict) -> Shape:
    return s


def _free(s, a: dict, o: Shape) -> tuple[int, int]:
    return 0, 0


@dataclass(frozen=True)
class Op:
    """An op applied to one value. `infer(shape, args)` returns the output shape (raising
    `OpError`); `count(shape, args, out)` returns (parameters, FLOPs); `module` says whether
    it has parameters or state (compiled to a module, declared in `Checked.modules`) rather
    than being a function. `role` marks its nodes (the built-in `proxy` is a "proxy").

    `label(args)` is the short text a picture shows for the op (a string: always that text);
    `sample(shape, chooser, preserve)` returns argument values valid on `shape` (keeping the
    shape when `preserve`), or None when the op cannot apply there; `weight` is how often the
    generator picks it relative to other ops."""

    name: str
    args: tuple[Arg, ...] = ()
    infer: Callable[[Shape, dict], Shape] = _same
    count: Callable[[Shape, dict, Shape], tuple[int, int]] = _free
    doc: str = ""
    module: bool = False
    label: Callable[[dict], str] | str | None = None
    sample: Callable[[Shape, Chooser, bool], dict | None] | None = None
    weight: int = 1
    role: str | None = None

    def bind(self, positional: list, keywords: dict) -> dict:
        """Match call arguments to this op's parameters, fill defaults and check kinds and
        values; raise `OpError` on a mismatch."""
        names = [a.name for a in self.args]
        pairs = [(None, v) for v in positional] + list(keywords.items())
        try:
            given = signature.bind(names, pairs, required=[a.name for a in self.args if a.required])
        except BindError as e:
            raise self._bind_error(e, len(positional)) from None
        out = {}
        for a in self.args:
            out[a.name] = self._checked(a, given[a.name]) if a.name in given else a.default
        return out

    def _bind_error(self, e: BindError, given: int) -> OpError:
        if e.kind == "too_many":
            return OpError(f"'{self.name}' takes at most {len(self.args)} argument(s), got {given}",
                           hint=self.signature())
        if e.kind == "unknown":
            from .errors import did_you_mean
            return OpError(f"'{self.name}' has no argument '{e.name}'", arg=e.name,
                           hint=did_you_mean(e.name, [a.name for a in self.args]) or self.unknown_hint())
        if e.kind == "twice":
            return OpError(f"argument '{e.name}' of '{self.name}' is given twice", arg=e.name)
        return OpError(f"'{self.name}' needs the argument '{e.name}'", hint=self.signature())

    def _checked(self, a: Arg, value):
        if value is None and a.default is None:
            return None
        if not _is(value, a.kind):
            raise OpError(f"argument '{a.name}' of '{self.name}' must be {_kind_name(a.kind)}, got {show(value)}",
                          arg=a.name)
        problem = signature.in_range(value)
        if a.kind is float and isinstance(value, int) and not problem:
            value = float(value)
        problem = problem or (a.check(value) if a.check else None)
        if problem:
            raise OpError(f"argument '{a.name}' of '{self.name}' {problem}, got {show(value)}", arg=a.name)
        return value

    def unknown_hint(self) -> str:
        return self.signature()

    def signature(self) -> str:
        parts = [a.name if a.required else f"{a.name}={show(a.default)}" for a in self.args]
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def text(self, args: dict, inputs: int = 1) -> str:
        """The op as a picture labels it."""
        if self.label is None:
            return self.name
        return self.label if isinstance(self.label, str) else self.label(args)


@dataclass(frozen=True)
class Merge(Op):
    """A merge of two or more chains (`add(a, b)`, `cat(a, b, dim=0)`): its `args` are the
    keyword options besides the paths. `infer(shapes, args)` gets every path's shape (an
    `OpError` with `path=i` blames path i); `count(shapes, args, out)`. `paths` tells the
    generator how to make paths: "equal" (all of the output's shape) or "concat" (equal but
    along the dimension its `dim` argument names); `sample(n, shape, chooser)` draws the
    options for n paths of `shape`. `complete(args, n)` fills in and checks the options that
    depend on the number of paths (the gate's one logit per path)."""

    paths: str = "equal"
    complete: Callable[[dict, int], dict] | None = None

    def bind(self, positional: list, keywords: dict) -> dict:  # the paths are not arguments
        return super().bind([], keywords)

    def text(self, args: dict, inputs: int = 1) -> str:
        return f"{super().text(args)}({inputs})"

    def unknown_hint(self) -> str:
        options = sorted(a.name for a in self.args)
        return f"'{self.name}' takes {', '.join(options)}" if options else f"'{self.name}' takes only the chains it merges"


def _is(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return any(isinstance(value, k) and k is not bool for k in kinds)


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
