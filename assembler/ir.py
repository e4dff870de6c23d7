"""The syntax IR: immutable pydantic models, one class per construct of the language.

Every node keeps the `Span` of the text it came from. Spans compare equal to each other, so
they never take part in equality: a parsed spec equals the same spec built by hand, and
`parse(format(spec)) == parse(text)` holds although the text moved.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class Span(BaseModel):
    """Where a node came from: file, 1-based line and column of its first and last character."""

    model_config = ConfigDict(frozen=True)
    file: str = "<spec>"
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0

    def __eq__(self, other: object) -> bool:  # spans never decide equality
        return other is None or isinstance(other, Span)

    def __hash__(self) -> int:
        return 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    span: Span | None = None


# ---------------------------------------------------------------------------------------------
# Values and expressions


class Ref(Node):
    """A possibly dotted name: `relu`, `teacher`, `pre.cnn.c2`."""

    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


class Range(Node):
    """`pre.cnn.c1..c4`: the composition of the bindings from `start` to `end`."""

    start: Ref
    end: str

    @property
    def dotted(self) -> str:
        return f"{self.start.dotted}..{self.end}"


class Number(Node):
    value: int | float
    text: str | None = None  # the spelling in the source (printed back as written)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Number) and self.value == other.value and type(self.value) is type(other.value)

    def __hash__(self) -> int:
        return hash(self.value)


class String(Node):
    value: str


class Bool(Node):
    value: bool


class ListValue(Node):
    items: tuple["Expr", ...]


class In(Node):
    """`in`: the implicit input of a template body."""


class Arg(Node):
    name: str | None = None  # keyword, or None for a positional argument
    value: "Expr"


class Call(Node):
    """`REF(ARGS)`: an op, template or merge applied with arguments; also a setting value."""

    ref: Ref
    args: tuple[Arg, ...] = ()


class Element(Node):
    """One step of a chain: an op, template, shared module, reference, range or `copy(...)`."""

    target: Ref | Range | Call
    modifier: Literal["frozen", "trainable"] | None = None


class Chain(Node):
    """`SOURCE -> ELEMENT -> ...`. In a pipe (template, shared) the source is None."""

    source: "Expr | None"
    elements: tuple[Element, ...] = ()


Expr = Union[Number, String, Bool, ListValue, In, Ref, Range, Call, Chain]


# ---------------------------------------------------------------------------------------------
# Statements


class Use(Node):
    path: str
    alias: str


class Param(Node):
    name: str
    default: Expr | None = None


class Binding(Node):
    name: str
    chain: Chain
    modifier: Literal["frozen", "trainable", "adapter"] | None = None


class Skips(Node):
    nodes: tuple[str, ...]
    args: tuple[Arg, ...] = ()


class Return(Node):
    names: tuple[str, ...]


Statement = Union[Binding, Skips, Return]


class Input(Node):
    name: str
    shape: tuple[int, ...]


class Block(Node):
    """A template: a pipe (`body` is None) or a body with `in` and a `return`."""

    name: str
    params: tuple[Param, ...] = ()
    pipe: Chain | None = None
    body: tuple[Statement, ...] | None = None
    has_parens: bool = False  # `block f() = ...` vs `block f = ...`, kept for printing

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Block):
            return False
        return (self.name, self.params, self.pipe, self.body) == (other.name, other.params, other.pipe, other.body)

    def __hash__(self) -> int:
        return hash(self.name)


class Shared(Node):
    name: str
    pipe: Chain
    frozen: bool = False


class Network(Node):
    name: str
    inputs: tuple[Input, ...]
    body: tuple[Statement, ...]


class Pair(Node):
    source: Ref
    target: Ref


class Match(Node):
    """Matching edges: explicit `pairs`, or `product` of two lists (all pairs)."""

    pairs: tuple[Pair, ...] = ()
    product: tuple[tuple[Ref, ...], tuple[Ref, ...]] | None = None
    weighting: Ref | Call

    def edges(self) -> tuple[Pair, ...]:
        if self.product is None:
            return self.pairs
        left, right = self.product
        return tuple(Pair(source=a, target=b, span=self.span) for a in left for b in right)


class Setting(Node):
    key: str
    value: Expr


class Train(Node):
    networks: tuple[str, ...]
    settings: tuple[Setting, ...]


TopLevel = Union[Use, Block, Shared, Network, Match, Train]


class Comment(BaseModel):
    """A source comment, kept for the formatter; not part of the spec's meaning."""

    model_config = ConfigDict(frozen=True)
    line: int
    column: int
    text: str


class Spec(Node):
    """A parsed `.net` file."""

    items: tuple[TopLevel, ...] = ()
    filename: str = "<spec>"
    comments: tuple[Comment, ...] = ()
    text: str | None = Field(default=None, exclude=True, repr=False)  # the source, for diagnostics

    def __eq__(self, other: object) -> bool:  # comments and filename are not meaning
        return isinstance(other, Spec) and self.items == other.items

    def __hash__(self) -> int:
        return hash(len(self.items))

    _index: tuple | None = PrivateAttr(default=None)  # (items it was built from, {kind: ...})

    def _kinds(self) -> dict:
        """The items by kind, built once per `items` (a spec with 10,000 networks is asked for
        them thousands of times)."""
        index = self._index
        if index is None or index[0] is not self.items:
            kinds: dict[type, list] = {Network: [], Block: [], Shared: [], Use: [], Match: [], Train: []}
            for i in self.items:
                kinds[type(i)].append(i)
            index = (self.items, {
                "networks": {i.name: i for i in kinds[Network]}, "blocks": {i.name: i for i in kinds[Block]},
                "shared": {i.name: i for i in kinds[Shared]}, "uses": tuple(kinds[Use]),
                "matches": tuple(kinds[Match]), "trains": tuple(kinds[Train])})
            self._index = index
        return index[1]

    @property
    def networks(self) -> Mapping[str, Network]:
        """Network name -> network (a read-only view)."""
        return MappingProxyType(self._kinds()["networks"])

    @property
    def blocks(self) -> Mapping[str, Block]:
        """Template name -> template (a read-only view)."""
        return MappingProxyType(self._kinds()["blocks"])

    @property
    def shared(self) -> Mapping[str, Shared]:
        """Shared module name -> its declaration (a read-only view)."""
        return MappingProxyType(self._kinds()["shared"])

    @property
    def uses(self) -> tuple[Use, ...]:
        return self._kinds()["uses"]

    @property
    def matches(self) -> tuple[Match, ...]:
        return self._kinds()["matches"]

    @property
    def trains(self) -> tuple[Train, ...]:
        return self._kinds()["trains"]


for _model in (ListValue, Arg, Call, Element, Chain, Param, Binding, Skips, Block, Network, Match, Setting, Train, Spec):
    _model.model_rebuild()


_set = object.__setattr__
_new = object.__new__


def make(cls, **fields):
    """A model built from trusted values without validation, for hot loops (the parser, the
    lowering): what `model_construct` does, less its generality (about twice as fast). Every
    field must be given, in declaration order (of the private attributes, only `Spec`'s).
    The shared fields-set is never changed in place (`model_copy` copies it first)."""
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    _set(obj, "__pydantic_fields_set__", _FIELDS.get(cls) or _FIELDS.setdefault(cls, set(cls.model_fields)))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", {"_index": None} if cls is Spec else None)
    return obj


_FIELDS: dict[type, set[str]] = {}
