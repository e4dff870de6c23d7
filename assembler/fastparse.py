"""The fast path of the parser: a recursive-descent parser (over the tokens of lexer.py) for valid
specs, several times faster than Lark with its parse tree.

It is an optimisation only. The grammar (`grammar/net.lark`) stays the definition of the
language and Lark the source of every syntax error: whenever this parser meets anything it
does not expect (an error, or a construct it leaves to Lark) it raises `Fallback` and
`parser.parse` parses the text again with Lark. It builds the same IR, spans included (the
spans Lark's position propagation gives), as a differential test checks over every spec
file, the golden cases and generated specs.

Lark's contextual lexer reads a keyword as a name where the keyword cannot stand, so words
are names except at the few places where the grammar lets a keyword begin something: the
start of a statement, of a value (`in`, `true`, `false`) and of an element (`frozen`,
`trainable`).
"""

from __future__ import annotations

import sys

from . import ir
from .ir import make
from .lexer import (ELEMENT_WORDS, INTEGER, MAX_DIGITS, MODIFIER_WORDS, STATEMENT_WORDS, VALUE_WORDS, Fallback, tokens,
                    unquote)

def parse(text: str, filename: str) -> tuple[ir.Spec, list]:
    """The spec (without comments and text) and its comments; raises `Fallback`."""
    comments: list = []
    p = _Parser(tokens(text, comments), filename)
    try:
        spec = p.spec()
    except (IndexError, RecursionError):
        raise Fallback from None
    return spec, comments


class _Parser:
    """Recursive descent over the token list. Each value parser returns (node, start, end):
    the IR node (with its own span) and the extent the full parser's position propagation
    gives its container (parentheses around a value belong to the container)."""

    def __init__(self, toks: list[tuple], filename: str):
        self.toks = toks
        self.i = 0
        self.file = filename

    # -- helpers ---------------------------------------------------------------------------------

    def span(self, start: tuple, end: tuple) -> ir.Span:
        return make(ir.Span, file=self.file, line=start[0], column=start[1], end_line=end[0], end_column=end[1])

    def take(self, kind: str) -> tuple:
        tok = self.toks[self.i]
        if tok[0] != kind:
            raise Fallback
        self.i += 1
        return tok

    def word(self, value: str | None = None) -> tuple:
        tok = self.toks[self.i]
        if tok[0] != "NAME" or value is not None and tok[1] != value:
            raise Fallback
        self.i += 1
        return tok

    def peek(self, k: int = 0) -> tuple:
        return self.toks[self.i + k]

    def items(self, item, close: str) -> list:
        """`[item ("," item)*]` up to (not taking) the `close` token."""
        out = []
        if self.peek()[0] != close:
            out.append(item())
            while self.peek()[0] == ",":
                self.i += 1
                out.append(item())
        return out

    def names(self) -> list[tuple]:
        """`NAME ("," NAME)*`: the name tokens."""
        out = [self.word()]
        while self.peek()[0] == ",":
            self.i += 1
            out.append(self.word())
        return out

    # -- top level -------------------------------------------------------------------------------

    def spec(self) -> ir.Spec:
        items, first, last = [], None, None
        while self.peek()[0] != "EOF":
            item, start, end = self.top()
            items.append(item)
            first = first or start
            last = end
            if self.peek()[0] == "NL":
                nl = self.take("NL")
                last = (nl[4], nl[5])
            elif self.peek()[0] != "EOF":
                raise Fallback
        span = self.span(first, last) if first else None
        return make(ir.Spec, span=span, items=tuple(items), filename=self.file, comments=(), text=None)

    def top(self):
        tok = self.peek()
        if tok[0] != "NAME" or tok[1] not in STATEMENT_WORDS:
            raise Fallback
        return getattr(self, "top_" + tok[1])()

    def top_use(self):
        kw = self.word("use")
        path = self.take("STRING")
        self.word("as")
        alias = self.word()
        start, end = kw[2:4], alias[4:6]
        return make(ir.Use, span=self.span(start, end), path=unquote(path[1]), alias=alias[1]), start, end

    def top_block(self):
        kw = self.word("block")
        name = self.word()[1]
        params = self.params() if self.peek()[0] == "(" else None
        if self.peek()[0] == "=":
            self.i += 1
            pipe, _, end = self.pipe()
            body = None
        else:
            self.take("{")
            body = self.body()
            close = self.take("}")
            pipe, end = None, close[4:6]
        start = kw[2:4]
        return make(ir.Block, span=self.span(start, end), name=name, params=params or (), pipe=pipe, body=body,
                    has_parens=params is not None), start, end

    def params(self) -> tuple:
        self.take("(")
        out = self.items(self.param, ")")
        self.take(")")
        return tuple(out)

    def param(self) -> ir.Param:
        name = self.word()
        default, end = None, name[4:6]
        if self.peek()[0] == "=":
            self.i += 1
            default, _, end = self.chain()
        return make(ir.Param, span=self.span(name[2:4], end), name=name[1], default=default)

    def top_frozen(self):
        start = self.word("frozen")[2:4]
        return self.top_shared(start)

    def top_shared(self, start: tuple | None = None):
        kw = self.word("shared")
        name = self.word()[1]
        self.take("=")
        pipe, _, end = self.pipe()
        frozen, start = start is not None, start or kw[2:4]
        return make(ir.Shared, span=self.span(start, end), name=name, pipe=pipe, frozen=frozen), start, end

    def top_network(self):
        kw = self.word("network")
        name = self.word()[1]
        self.take("(")
        inputs = self.items(self.input, ")")
        self.take(")")
        self.take("{")
        body = self.body()
        close = self.take("}")
        start, end = kw[2:4], close[4:6]
        return make(ir.Network, span=self.span(start, end), name=name, inputs=tuple(inputs), body=body), start, end

    def input(self) -> ir.Input:
        name = self.word()
        self.take(":")
        shape, _, end = self.list()
        dims = tuple(x.value for x in shape.items if isinstance(x, ir.Number))
        if not dims or len(dims) != len(shape.items) or not all(type(d) is int and d > 0 for d in dims):
            raise Fallback  # the full parser reports the bad shape
        return make(ir.Input, span=self.span(name[2:4], end), name=name[1], shape=dims)

    def top_match(self):
        kw = self.word("match")
        if self.peek()[0] == "[":
            left, right = self.match_list(), None
            self.take("*")
            right = self.match_list()
            pairs, product = (), (left, right)
        else:
            pairs, product = (self.pair(),), None
            while self.peek()[0] == ",":
                self.i += 1
                pairs += (self.pair(),)
        self.take(":")
        weighting, end = self.weighting()
        start = kw[2:4]
        return make(ir.Match, span=self.span(start, end), pairs=pairs, product=product,
                    weighting=weighting), start, end

    def match_list(self) -> tuple:
        lst, _, _ = self.list()
        if not lst.items or not all(isinstance(x, ir.Ref) for x in lst.items):
            raise Fallback  # the full parser reports what a match list must hold
        return lst.items

    def pair(self) -> ir.Pair:
        source, s0, _ = self.ref()
        self.take("ARROW")
        target, _, e1 = self.ref()
        return make(ir.Pair, span=self.span(s0, e1), source=source, target=target)

    def weighting(self):
        ref, start, end = self.ref()
        if self.peek()[0] != "(":
            return ref, end
        args, end = self.call_args()
        return make(ir.Call, span=self.span(start, end), ref=ref, args=args), end

    def top_train(self):
        kw = self.word("train")
        names = [n[1] for n in self.names()]
        self.take("{")
        settings = []
        self.skip_nl()
        while self.peek()[0] != "}":
            key = self.word()
            self.take("=")
            value, _, end = self.chain()
            settings.append(make(ir.Setting, span=self.span(key[2:4], end), key=key[1], value=value))
            self.end_statement()
        close = self.take("}")
        start, end = kw[2:4], close[4:6]
        return make(ir.Train, span=self.span(start, end), networks=tuple(names),
                    settings=tuple(settings)), start, end

    # -- bodies ----------------------------------------------------------------------------------

    def skip_nl(self) -> None:
        if self.peek()[0] == "NL":
            self.i += 1

    def end_statement(self) -> None:
        kind = self.peek()[0]
        if kind == "NL":
            self.i += 1
        elif kind != "}":
            raise Fallback

    def body(self) -> tuple:
        out = []
        self.skip_nl()
        while self.peek()[0] != "}":
            out.append(self.statement())
            self.end_statement()
        return tuple(out)

    def statement(self):
        tok = self.peek()
        if tok[0] != "NAME":
            raise Fallback
        word = tok[1]
        if word == "skips":
            return self.skips()
        if word == "return":
            kw = self.word()
            names = self.names()
            return make(ir.Return, span=self.span(kw[2:4], names[-1][4:6]), names=tuple(n[1] for n in names))
        modifier = None
        if word in MODIFIER_WORDS:
            modifier = self.word()
        name = self.word()
        self.take("=")
        value, start, end = self.chain()
        chain = value if isinstance(value, ir.Chain) else make(ir.Chain, span=value.span, source=value, elements=())
        first = modifier or name
        return make(ir.Binding, span=self.span(first[2:4], end), name=name[1], chain=chain,
                    modifier=modifier[1] if modifier else None)

    def skips(self) -> ir.Skips:
        kw = self.word("skips")
        names = self.names()
        end = names[-1][4:6]
        args = ()
        if self.peek()[0] == "(":
            args, end = self.call_args()
        return make(ir.Skips, span=self.span(kw[2:4], end), nodes=tuple(n[1] for n in names), args=args)

    # -- chains and values ----------------------------------------------------------------------

    def chain(self):
        """A value: an atom, then elements after arrows (`?chain` of the grammar)."""
        atom, start, end = self.atom()
        if self.peek()[0] != "ARROW":
            return atom, start, end
        elements = []
        while self.peek()[0] == "ARROW":
            self.i += 1
            el, _, end = self.element()
            elements.append(el)
        span = self.span(start, end)
        if isinstance(atom, ir.Chain) and atom.source is not None:  # (a -> b) -> c
            return make(ir.Chain, span=span, source=atom.source, elements=atom.elements + tuple(elements)), start, end
        return make(ir.Chain, span=span, source=atom, elements=tuple(elements)), start, end

    def pipe(self):
        first, start, end = self.element()
        elements = [first]
        while self.peek()[0] == "ARROW":
            self.i += 1
            el, _, end = self.element()
            elements.append(el)
        return make(ir.Chain, span=self.span(start, end), source=None, elements=tuple(elements)), start, end

    def atom(self):
        tok = self.peek()
        kind = tok[0]
        if kind == "NAME":
            word = tok[1]
            if word in VALUE_WORDS:
                self.i += 1
                start, end = tok[2:4], tok[4:6]
                span = self.span(start, end)
                node = make(ir.In, span=span) if word == "in" else make(ir.Bool, span=span, value=word == "true")
                return node, start, end
            return self.target()
        if kind == "NUMBER":
            return self.number()
        if kind == "STRING":
            self.i += 1
            start, end = tok[2:4], tok[4:6]
            return make(ir.String, span=self.span(start, end), value=unquote(tok[1])), start, end
        if kind == "[":
            return self.list()
        if kind == "(":
            open_ = self.take("(")
            inner, _, _ = self.chain()
            close = self.take(")")
            return inner, open_[2:4], close[4:6]
        raise Fallback

    def number(self):
        tok = self.take("NUMBER")
        text = tok[1]
        if len(text) > MAX_DIGITS:
            raise Fallback
        value = int(text) if INTEGER.fullmatch(text) else float(text)
        start, end = tok[2:4], tok[4:6]
        return make(ir.Number, span=self.span(start, end), value=value, text=text), start, end

    def list(self):
        open_ = self.take("[")
        items = self.items(lambda: self.chain()[0], "]")
        close = self.take("]")
        start, end = open_[2:4], close[4:6]
        return make(ir.ListValue, span=self.span(start, end), items=tuple(items)), start, end

    def ref(self):
        first = self.word()
        parts, last = [first[1]], first
        while self.peek()[0] == ".":
            self.i += 1
            last = self.word()
            parts.append(last[1])
        start, end = first[2:4], last[4:6]
        return make(ir.Ref, span=self.span(start, end), parts=tuple(parts)), start, end

    def target(self):
        """A reference, a range `a.b..c` or a call `f(...)`."""
        ref, start, end = self.ref()
        kind = self.peek()[0]
        if kind == "..":
            self.i += 1
            name = self.word()
            end = name[4:6]
            return make(ir.Range, span=self.span(start, end), start=ref, end=name[1]), start, end
        if kind == "(":
            args, end = self.call_args()
            return make(ir.Call, span=self.span(start, end), ref=ref, args=args), start, end
        return ref, start, end

    def element(self):
        tok = self.peek()
        if tok[0] != "NAME":
            raise Fallback
        modifier = None
        if tok[1] in ELEMENT_WORDS:
            modifier = tok
            self.i += 1
        target, start, end = self.target()
        if modifier is None:
            return make(ir.Element, span=target.span, target=target, modifier=None), start, end
        start = modifier[2:4]
        return make(ir.Element, span=self.span(start, end), target=target, modifier=modifier[1]), start, end

    def call_args(self):
        self.take("(")
        args = self.items(self.arg, ")")
        close = self.take(")")
        return tuple(args), close[4:6]

    def arg(self) -> ir.Arg:
        tok = self.peek()
        if tok[0] == "NAME" and self.peek(1)[0] == "=" and tok[1] not in VALUE_WORDS:
            self.i += 2
            value, _, end = self.chain()
            return make(ir.Arg, span=self.span(tok[2:4], end), name=tok[1], value=value)
        value, start, end = self.chain()
        span = value.span if (start, end) == _extent(value) else self.span(start, end)
        return make(ir.Arg, span=span, name=None, value=value)


def _extent(node) -> tuple:
    s = node.span
    return (s.line, s.column), (s.end_line, s.end_column)


assert sys.version_info >= (3, 11)  # possessive quantifiers in the lexer
