"""The lexical level of the language, for the fast parser (fastparse.py): keywords, limits,
string escapes and a tokenizer that gives the token stream the grammar's post-lexer gives
(newlines inside brackets, at the start and after a newline dropped; comments collected).
"""

from __future__ import annotations

import re

from . import ir
from .ir import make

_LEXER = re.compile(r"""
  (?P<ARROW>(?:[ \t\f\r]|\n|\#[^\r\n]*+)*+->)
| (?P<WS>[ \t\f\r]+)
| (?P<NL>\n)
| (?P<COMMENT>\#[^\n]*)
| (?P<STRING>"(?:[^"\\\r\n]|\\.)*")
| (?P<NUMBER>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
| (?P<NAME>[A-Za-z_][A-Za-z0-9_]*)
| (?P<PUNCT>\.\.|[()\[\]{}=,:.*])
| (?P<BAD>[\s\S])
""", re.X)
INTEGER = re.compile(r"[+-]?\d+")
_COMMENT_IN_ARROW = re.compile(r"#[^\r\n]*")
KEYWORDS = frozenset(
    "use as block shared frozen trainable adapter network match train skips return in true false".split()
)
# Where a keyword can stand, and so is read as one (everywhere else a word is a name):
STATEMENT_WORDS = frozenset("use block shared frozen network match train".split())  # a top-level statement
VALUE_WORDS = frozenset(("in", "true", "false"))  # a value
MODIFIER_WORDS = frozenset(("frozen", "trainable", "adapter"))  # a binding (besides skips, return)
ELEMENT_WORDS = frozenset(("frozen", "trainable"))  # an element
MAX_DIGITS = 4000  # longer numbers are an error (Python reads at most 4300 digits)
MAX_NESTING = 128  # lists and calls nested deeper are an error (deeper would exhaust Python's stack)


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def unquote(s: str) -> str:
    r"""A string literal's value: backslash escapes \\ \" \n \r \t \0 \xNN \uNNNN; a backslash
    before any other character is kept."""
    def one(m):
        e = m.group(1)
        if e[0] in "xu" and len(e) > 1:
            return chr(int(e[1:], 16))
        return _SIMPLE.get(e, e if e in '\\"' else "\\" + e)
    return _ESCAPE.sub(one, s[1:-1]) if "\\" in s else s[1:-1]


class Fallback(Exception):
    """The text needs the full parser: it has an error, or something the fast path leaves to it."""


# A token: (kind, value, line, column, end_line, end_column); kind is NAME, NUMBER, STRING,
# ARROW, NL, EOF or the punctuation itself.


def tokens(text: str, comments: list) -> list[tuple]:
    """The token stream the parser sees: newlines inside brackets, at the start and after a
    newline dropped (the post-lexer of the full parser); comments go to `comments`.

    (One loop of some 45 lines: it runs once per token, so it stays free of calls.)"""
    out: list[tuple] = []
    append = out.append
    line, line_start, last_nl = 1, 0, True
    nesting: list[bool] = []  # per open bracket: whether it is a list or a call (a level of nesting)
    level = 0
    for m in _LEXER.finditer(text):
        kind = m.lastgroup
        start, end = m.span()
        if kind == "WS":
            continue
        if kind == "NAME" or kind == "NUMBER" or kind == "STRING":
            append((kind, m.group(), line, start - line_start + 1, line, end - line_start + 1))
            last_nl = False
        elif kind == "PUNCT":
            value = m.group()
            if value == "(" or value == "[":
                deeper = value == "[" or bool(out) and out[-1][0] == "NAME"
                nesting.append(deeper)
                level += deeper
                if level > MAX_NESTING:
                    raise Fallback  # the full parser reports where
            elif (value == ")" or value == "]") and nesting:
                level -= nesting.pop()
            append((value, value, line, start - line_start + 1, line, end - line_start + 1))
            last_nl = False
        elif kind == "NL":
            if not nesting and not last_nl:
                append(("NL", "\n", line, start - line_start + 1, line + 1, 1))
                last_nl = True
            line, line_start = line + 1, end
        elif kind == "ARROW":
            value = m.group()
            col = start - line_start + 1
            if "#" in value or "\n" in value:
                line, line_start = _arrow_comments(value, line, col, start, line_start, comments)
            append(("ARROW", "->", line, end - 2 - line_start + 1, line, end - line_start + 1))
            last_nl = False
        elif kind == "COMMENT":
            comments.append(make(ir.Comment, line=line, column=start - line_start + 1, text=m.group().rstrip()))
        else:
            raise Fallback
    append(("EOF", "", line, len(text) - line_start + 1, line, len(text) - line_start + 1))
    return out


def _arrow_comments(value: str, line: int, col: int, start: int, line_start: int, comments: list) -> tuple[int, int]:
    """Comments inside a continued arrow (`a  # why` newline `-> b`); the line counters after it."""
    offset = 0
    for piece in re.split(r"(\r?\n)", value):
        if piece.endswith("\n"):
            line, col = line + 1, 1
            offset += len(piece)
            line_start = start + offset
            continue
        c = _COMMENT_IN_ARROW.search(piece)
        if c:
            comments.append(make(ir.Comment, line=line, column=col + c.start(), text=c.group().rstrip()))
        col += len(piece)
        offset += len(piece)
    return line, line_start
