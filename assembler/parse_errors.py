"""Lark's exceptions -> `ParseError`s that say, in words a user knows, what was found, what
was expected and which bracket is still open."""

from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import Diagnostic, ParseError, source_lines
from .lexer import KEYWORDS

_WORDS = {
    "_NL": "the end of the line",
    "$END": "the end of the file",
    "_ARROW": "'->'",
    "NAME": "a name",
    "STRING": "a string",
    "SIGNED_NUMBER": "a number",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "DOT": "'.'",
    "STAR": "'*'",
    "MODIFIER": "'frozen', 'trainable' or 'adapter'",
    "ELEMENT_MOD": "'frozen' or 'trainable'",
    "FROZEN": "'frozen'",
}


def _word(terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    if terminal.lower() in KEYWORDS:
        return f"'{terminal.lower()}'"
    if terminal == "__ANON_0" or terminal.startswith("__"):
        return "'..'"
    return terminal.lower()


_ORDER = ["NAME", "SIGNED_NUMBER", "STRING", "LSQB", "LPAR", "_ARROW", "EQUAL", "COMMA", "COLON", "DOT", "RPAR", "RSQB", "LBRACE", "RBRACE", "_NL", "$END"]


def _expected(terms) -> str:
    terms = {t for t in terms if t not in ("WS", "COMMENT")}
    if {"MODIFIER", "ELEMENT_MOD", "FROZEN"} & terms:
        terms -= {"MODIFIER", "ELEMENT_MOD", "FROZEN"}
    words = []
    for t in sorted(terms, key=lambda t: (_ORDER.index(t) if t in _ORDER else len(_ORDER) - 2.5, t)):
        w = _word(t)
        if w not in words:
            words.append(w)
    if len(words) > 6:
        words = words[:5] + ["..."]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of the line"
    if tok.type == "$END":
        return "end of the file"
    if tok.type == "_ARROW":
        return "'->'"
    value = str(tok.value)
    if tok.type == "NAME" or value in KEYWORDS:
        return f"'{value}'"
    return repr(value) if tok.type == "STRING" else f"'{value}'"


def translate(e: UnexpectedInput, text: str, filename: str) -> ParseError:
    """A Lark exception as a located `ParseError`, in words a user knows."""
    line, column, width, hint = e.line, e.column, 1, None
    if isinstance(e, UnexpectedToken):
        msg, line, column, width, hint = _unexpected_token(e, text)
    elif isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        msg = f"unexpected character {ch!r}"
        if ch == '"':
            msg = "unterminated string"
            hint = "close the string with '\"' on the same line"
    elif isinstance(e, UnexpectedEOF):
        line, column = _end_position(text)
        msg = f"unexpected end of the file; expected {_expected(e.expected)}"
    else:  # pragma: no cover - lark has no other kinds
        msg = str(e)
    return ParseError(Diagnostic(msg, filename, line, column, width, hint, text))


def _unexpected_token(e: UnexpectedToken, text: str) -> tuple[str, int, int, int, str | None]:
    """(message, line, column, caret width, hint) for a token the grammar does not expect."""
    tok, line, column, width, hint = e.token, e.line, e.column, 1, None
    expected = set(e.accepts or e.expected) if hasattr(e, "accepts") else set(e.expected)
    if tok.type == "$END":
        line, column = _end_position(text)
        return f"unexpected end of the file; expected {_expected(expected)}", line, column, 1, _unclosed_hint(text)
    if tok.type == "_ARROW" and tok.value != "->":
        # the arrow token started at a newline: point at the arrow itself
        offset = tok.value.rindex("->")
        before = tok.value[:offset]
        line = tok.line + before.count("\n")
        column = (len(before) - before.rfind("\n")) if "\n" in before else tok.column + offset
        return f"unexpected '->'; expected {_expected(expected)}", line, column, 2, None
    width = max(1, len(str(tok.value))) if tok.type != "_NL" else 1
    msg = f"unexpected {_describe(tok)}; expected {_expected(expected)}"
    before = _word_before(text, line, column)
    if tok.type != "NAME" and str(tok.value) in KEYWORDS and "NAME" in expected:
        msg, hint = f"'{tok.value}' is a keyword and cannot be used as a name", "choose another name"
    elif str(tok.value) == "=" and before and before[0] in KEYWORDS:
        word, line, column = before
        width = len(word)
        msg, hint = f"'{word}' is a keyword and cannot be used as a name", "choose another name"
    elif any(t in expected for t in ("RPAR", "RSQB")):
        hint = _unclosed_hint(text[: _offset(text, line, column)])
    return msg, line, column, width, hint


def _word_before(text: str, line: int, column: int) -> tuple[str, int, int] | None:
    """The word just before a position on the same line, with its line and column."""
    lines = source_lines(text)
    row = lines[line - 1] if line <= len(lines) else ""
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", row[: column - 1])
    return (m.group(1), line, m.start(1) + 1) if m else None


def _offset(text: str, line: int, column: int) -> int:
    lines = text.splitlines(keepends=True)
    return sum(len(x) for x in lines[: line - 1]) + column - 1


def _end_position(text: str) -> tuple[int, int]:
    lines = text.splitlines()
    if not lines:
        return 1, 1
    return len(lines), len(lines[-1]) + 1


def _unclosed_hint(text: str) -> str | None:
    """Which bracket is still open at the end of `text` (strings and comments skipped)."""
    stack: list[tuple[str, int, int]] = []
    line, col = 1, 0
    in_string = in_comment = False
    pairs = {")": "(", "]": "[", "}": "{"}
    prev = ""
    for ch in text:
        col += 1
        if ch == "\n":
            line, col, in_comment, in_string = line + 1, 0, False, False
        elif in_comment:
            pass
        elif in_string:
            if ch == '"' and prev != "\\":
                in_string = False
        elif ch == "#":
            in_comment = True
        elif ch == '"':
            in_string = True
        elif ch in "([{":
            stack.append((ch, line, col))
        elif ch in ")]}" and stack and stack[-1][0] == pairs[ch]:
            stack.pop()
        prev = ch
    if stack:
        ch, l, c = stack[-1]
        return f"the '{ch}' at line {l}, column {c} is never closed"
    return None
