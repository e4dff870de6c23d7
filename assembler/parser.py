"""Text -> syntax IR. The grammar is loaded once (LALR, contextual lexer, positions on).

Valid text takes the fast path (fastparse.py, a hand-written parser that builds the same
IR); anything else is parsed with Lark, whose errors are translated into `ParseError`s
(parse_errors.py) at this boundary.
"""

from __future__ import annotations

import contextlib
import gc
import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from . import fastparse, ir
from .errors import CheckError, Diagnostic, ParseError, SpecError
from .lexer import KEYWORDS, MAX_DIGITS, MAX_NESTING, unquote

__all__ = ["KEYWORDS", "parse", "parse_fragment"]


class _Continuations:
    """Post-lexer: newlines inside brackets do not end a statement; runs of newlines are one;
    lists and calls nested more than MAX_NESTING deep are a located error.

    (A newline before `->` never reaches here: the `_ARROW` terminal swallows it.)"""

    always_accept = ("_NL",)
    source: tuple[str, str] = ("<spec>", "")  # (filename, text) of the parse under way

    def process(self, stream):
        depth, nesting, last_nl, prev = 0, [], True, None  # last_nl: drop newlines at the start
        for tok in stream:
            kind = tok.type
            if kind == "_NL":
                if depth or last_nl:
                    continue
                last_nl = True
            else:
                last_nl = False
                if kind in ("LPAR", "LSQB"):
                    depth += 1
                    nesting.append(kind == "LSQB" or prev == "NAME")  # a list or a call: one level deeper
                    if sum(nesting) > MAX_NESTING:
                        raise _too_deep(*self.source, tok)
                elif kind in ("RPAR", "RSQB") and depth:
                    depth -= 1
                    nesting.pop()
            prev = kind
            yield tok


_COMMENT_IN_ARROW = re.compile(r"#[^\r\n]*")


@lru_cache(maxsize=None)
def _grammar_text() -> str:
    return resources.files("assembler.grammar").joinpath("net.lark").read_text(encoding="utf-8")


class _Collector:
    """Collects comments while lexing, for the formatter."""

    def __init__(self) -> None:
        self.comments: list[ir.Comment] = []

    def comment(self, tok: Token) -> Token:
        self.comments.append(ir.Comment(line=tok.line, column=tok.column, text=tok.value.rstrip()))
        return tok

    def arrow(self, tok: Token) -> Token:
        # `_ARROW` may span lines (a chain continued before `->`), comments included.
        if "#" in tok.value:
            line, col = tok.line, tok.column
            for piece in re.split(r"(\r?\n)", tok.value):
                if piece.endswith("\n"):
                    line, col = line + 1, 1
                    continue
                m = _COMMENT_IN_ARROW.search(piece)
                if m:
                    self.comments.append(ir.Comment(line=line, column=col + m.start(), text=m.group().rstrip()))
                col += len(piece)
        return tok


_collector = _Collector()
_postlexer = _Continuations()


@lru_cache(maxsize=None)
def _lark() -> Lark:
    return Lark(
        _grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        postlex=_postlexer,
        lexer_callbacks={"COMMENT": _collector.comment, "_ARROW": _collector.arrow},
        cache=False,
    )


def parse(text: str, filename: str = "<spec>") -> ir.Spec:
    """Parse spec text into the syntax IR. Raises `ParseError` (or `CheckError` for literal
    values that cannot be right, such as a shape with a zero)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    with gc_paused():
        try:
            spec, comments = fastparse.parse(text, filename)
        except fastparse.Fallback:
            spec, comments = _parse_with_lark(text, filename)
    return spec.model_copy(update={"comments": tuple(comments), "text": text})


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for a bounded piece of work that allocates many
    small objects and few cycles (parsing, checking): its passes, which revisit every object
    still alive, make such work grow faster than its input (measured: 80 instead of 99 us a
    binding at 40,000 bindings). Reference counting still frees what the work drops."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _parse_with_lark(text: str, filename: str) -> tuple[ir.Spec, list]:
    """The full parser: every syntax error of the language is found and located here."""
    from .parse_errors import translate
    _collector.comments = []
    _postlexer.source = (filename, text)
    try:
        tree = _lark().parse(text)
        spec = _ToIR(filename, text).transform(tree)
    except UnexpectedInput as e:
        raise translate(e, text, filename) from None
    except VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise _too_deep(filename, text) from None
        raise
    except RecursionError:
        raise _too_deep(filename, text) from None
    return spec, _collector.comments


def _too_deep(filename: str, text: str, tok: Token | None = None) -> ParseError:
    where = (tok.line, tok.column) if tok is not None else (0, 0)
    return ParseError(Diagnostic(f"the spec nests lists, merges or calls more than {MAX_NESTING} levels deep",
                                 filename, *where, hint="split deeply nested expressions into separate bindings",
                                 source=text))


def parse_fragment(text: str, rule: str = "chain", filename: str = "<fragment>"):
    """Parse a chain (`"conv(8, 3) -> relu"`) or a pipe, as the edit API takes them, or a
    setting's value (`"adam(lr=0.01)"`), as `--set` and `--data` take them."""
    wrapper = {"chain": "network _f() {{\n_f = {}\n}}", "pipe": "block _f = {}",
               "value": "train _f {{\n_f = {}\n}}\n"}[rule]
    spec = parse(wrapper.format(text), filename)
    item = spec.items[0]
    if rule == "chain":
        return item.body[0].chain
    return item.pipe if rule == "pipe" else item.settings[0].value


# ---------------------------------------------------------------------------------------------
# Parse tree -> IR


@v_args(meta=True)
class _ToIR(Transformer):
    """One short method per grammar rule; an unhandled rule raises (no raw Tree in the IR)."""

    def __init__(self, filename: str, text: str):
        super().__init__()
        self.filename = filename
        self.text = text

    def __default__(self, data, children, meta):  # pragma: no cover - grammar and IR agree
        raise NotImplementedError(f"no IR for grammar rule {data!r}")

    def _span(self, meta) -> ir.Span | None:
        if getattr(meta, "empty", True):
            return None
        return ir.Span.model_construct(file=self.filename, line=meta.line, column=meta.column,
                       end_line=meta.end_line, end_column=meta.end_column)

    def _tspan(self, tok: Token) -> ir.Span:
        return ir.Span.model_construct(file=self.filename, line=tok.line, column=tok.column,
                       end_line=tok.end_line, end_column=tok.end_column)

    def _error(self, message: str, span, hint: str | None = None) -> CheckError:
        from .errors import diagnostic
        return CheckError(diagnostic(message, span, hint=hint, source=self.text))

    # top level
    def start(self, meta, items):
        return ir.Spec.model_construct(items=tuple(items), filename=self.filename, span=self._span(meta))

    def use(self, meta, c):
        return ir.Use.model_construct(path=unquote(c[0]), alias=str(c[1]), span=self._span(meta))

    def block_pipe(self, meta, c):
        name, params, pipe = c
        return ir.Block.model_construct(name=str(name), params=params or (), pipe=pipe, has_parens=params is not None,
                        span=self._span(meta))

    def block_body(self, meta, c):
        name, params, body = c
        return ir.Block.model_construct(name=str(name), params=params or (), body=body, has_parens=params is not None,
                        span=self._span(meta))

    def params(self, meta, c):
        return tuple(p for p in c if p is not None)

    def param(self, meta, c):
        return ir.Param.model_construct(name=str(c[0]), default=c[1], span=self._span(meta))

    def shared(self, meta, c):
        return ir.Shared.model_construct(frozen=c[0] is not None, name=str(c[1]), pipe=c[2], span=self._span(meta))

    def network(self, meta, c):
        name, *inputs, body = c
        return ir.Network.model_construct(name=str(name), inputs=tuple(i for i in inputs if i is not None), body=body,
                          span=self._span(meta))

    def input(self, meta, c):
        name, shape = c
        dims = []
        for item in shape.items:
            if not (isinstance(item, ir.Number) and isinstance(item.value, int) and item.value > 0):
                raise self._error("a shape is a list of positive whole numbers", item.span or shape.span,
                                  hint="shapes leave out the batch dimension, e.g. [1, 8, 8]")
            dims.append(item.value)
        if not dims:
            raise self._error("a shape needs at least one dimension", shape.span,
                              hint="shapes leave out the batch dimension, e.g. [1, 8, 8]")
        return ir.Input.model_construct(name=str(name), shape=tuple(dims), span=self._span(meta))

    def body(self, meta, c):
        return tuple(c)

    def binding(self, meta, c):
        mod, name, chain = c
        return ir.Binding.model_construct(modifier=str(mod) if mod else None, name=str(name), chain=_as_chain(chain),
                          span=self._span(meta))

    def skips(self, meta, c):
        args = c[-1] or ()
        names = tuple(str(n) for n in c[:-1])
        return ir.Skips.model_construct(nodes=names, args=args, span=self._span(meta))

    def return_(self, meta, c):
        return ir.Return.model_construct(names=tuple(str(n) for n in c), span=self._span(meta))

    # chains and values
    def chain(self, meta, c):
        source, *elements = c
        if not elements:
            return source
        if isinstance(source, ir.Chain) and source.source is not None:  # (a -> b) -> c
            return ir.Chain.model_construct(source=source.source, elements=source.elements + tuple(elements), span=self._span(meta))
        return ir.Chain.model_construct(source=source, elements=tuple(elements), span=self._span(meta))

    def pipe(self, meta, c):
        return ir.Chain.model_construct(source=None, elements=tuple(c), span=self._span(meta))

    def modifier(self, meta, c):
        return str(c[0])

    element_mod = modifier

    def frozen(self, meta, c):
        return True

    def element(self, meta, c):
        mod, target = c
        return ir.Element.model_construct(target=target, modifier=str(mod) if mod else None, span=self._span(meta))

    def in_(self, meta, c):
        return ir.In.model_construct(span=self._span(meta))

    def call(self, meta, c):
        return ir.Call.model_construct(ref=c[0], args=c[1], span=self._span(meta))

    def call_args(self, meta, c):
        return tuple(a for a in c if a is not None)

    def arg(self, meta, c):
        name, value = c
        return ir.Arg.model_construct(name=str(name) if name is not None else None, value=value, span=self._span(meta))

    def ref(self, meta, c):
        return ir.Ref.model_construct(parts=tuple(str(t) for t in c), span=self._span(meta))

    def range(self, meta, c):
        return ir.Range.model_construct(start=c[0], end=str(c[1]), span=self._span(meta))

    def list(self, meta, c):
        return ir.ListValue.model_construct(items=tuple(x for x in c if x is not None), span=self._span(meta))

    def number(self, meta, c):
        text = str(c[0])
        if len(text) > MAX_DIGITS:
            raise self._error(f"this number has {len(text):,} characters, more than a spec reads ({MAX_DIGITS:,})",
                              self._span(meta), hint="numbers in a spec are sizes, rates and seeds: write a "
                              "smaller one")
        value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        return ir.Number.model_construct(value=value, text=text, span=self._span(meta))

    def string(self, meta, c):
        return ir.String.model_construct(value=unquote(str(c[0])), span=self._span(meta))

    def true(self, meta, c):
        return ir.Bool.model_construct(value=True, span=self._span(meta))

    def false(self, meta, c):
        return ir.Bool.model_construct(value=False, span=self._span(meta))

    # match and train
    def match(self, meta, c):
        pairs, weighting = c
        if isinstance(pairs, tuple) and pairs and pairs[0] == "product":
            return ir.Match.model_construct(product=pairs[1], weighting=weighting, span=self._span(meta))
        return ir.Match.model_construct(pairs=pairs, weighting=weighting, span=self._span(meta))

    def pairs(self, meta, c):
        return tuple(c)

    def product(self, meta, c):
        sides = []
        for lst in c:
            refs = []
            for item in lst.items:
                if not isinstance(item, ir.Ref):
                    raise self._error("a match list holds binding references such as src.c2", item.span)
                refs.append(item)
            if not refs:
                raise self._error("a match list needs at least one binding", lst.span)
            sides.append(tuple(refs))
        return ("product", (sides[0], sides[1]))

    def pair(self, meta, c):
        return ir.Pair.model_construct(source=c[0], target=c[1], span=self._span(meta))

    def weighting(self, meta, c):
        ref, args = c
        return ref if args is None else ir.Call.model_construct(ref=ref, args=args, span=self._span(meta))

    def train(self, meta, c):
        *names, settings = c
        return ir.Train.model_construct(networks=tuple(str(n) for n in names), settings=settings, span=self._span(meta))

    def settings(self, meta, c):
        return tuple(c)

    def setting(self, meta, c):
        return ir.Setting.model_construct(key=str(c[0]), value=c[1], span=self._span(meta))




def _as_chain(value) -> ir.Chain:
    if isinstance(value, ir.Chain):
        return value
    return ir.Chain.model_construct(source=value, elements=(), span=value.span)
