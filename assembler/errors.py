"""One error family for everything a user can get wrong, rendered as compilers do:

    tailor.net:12:17: error: unknown op 'conv2'
        c1 = x -> conv2(16, 3)
                  ^^^^^
    hint: did you mean 'conv'?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Diagnostic:
    """One located message. `line`/`column` are 1-based; 0 means "the whole file"."""

    message: str
    filename: str = "<spec>"
    line: int = 0
    column: int = 0
    width: int = 1  # how many characters the caret line underlines
    hint: str | None = None
    source: str | None = field(default=None, compare=False)  # the file's text, when known
    notes: tuple[str, ...] = ()  # more context, one `note:` line each (e.g. the template use that failed)

    def with_note(self, note: str) -> "Diagnostic":
        return replace(self, notes=self.notes + (note,))

    def render(self) -> str:
        where = self.filename
        if self.line:
            where += f":{self.line}:{self.column}"
        out = [f"{where}: error: {self.message}"]
        text = self._source_line()
        if text is not None:
            shown, column = _window(text.rstrip("\r\n").expandtabs(1), self.column)
            out.append("    " + shown)
            width = max(1, min(self.width, len(shown) - column + 1))
            out.append("    " + " " * (column - 1) + "^" * width)
        if self.hint:
            out.append(f"hint: {self.hint}")
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def _source_line(self) -> str | None:
        if not self.line:
            return None
        source = self.source
        if source is None:
            try:
                source = Path(self.filename).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
        lines = source_lines(source)
        return lines[self.line - 1].rstrip("\r") if 0 < self.line <= len(lines) else None


def _window(line: str, column: int, size: int = 160) -> tuple[str, int]:
    """A long source line cut to `size` characters around `column` ("..." where cut), and the
    column within what is shown."""
    if len(line) <= size:
        return line, column
    start = max(0, min(column - 1 - size // 3, len(line) - size))
    shown = line[start:start + size]
    if start:
        shown, column = "..." + shown[3:], column - start
    if start + size < len(line):
        shown = shown[:-3] + "..."
    return shown, column


@lru_cache(maxsize=16)
def source_lines(text: str) -> tuple[str, ...]:
    """The lines of a source text, as the lexer counts them (only \n breaks a line). Cached,
    so that many diagnostics in one file split it once (Python caches a string's hash, and
    the cache finds the same text object first by identity)."""
    return tuple(text.split("\n"))


class SpecError(Exception):
    """An error in a spec, a data source, a checkpoint or a flag, located where it arose.

    Holds one or more `Diagnostic`s (independent errors in one file are reported together).
    The first one's place is exposed as `filename`, `line` and `column`.
    """

    def __init__(self, diagnostics: Diagnostic | Iterable[Diagnostic]):
        diags = [diagnostics] if isinstance(diagnostics, Diagnostic) else list(diagnostics)
        if not diags:
            raise ValueError("SpecError needs at least one diagnostic")
        self.diagnostics = diags
        super().__init__(diags[0].message)  # rendered on demand (`str`), not here: 10,000 errors render once

    def __reduce__(self):
        return type(self), (self.diagnostics,)

    @classmethod
    def at(cls, message: str, span=None, *, hint: str | None = None, width: int | None = None,
           source: str | None = None) -> "SpecError":
        return cls(diagnostic(message, span, hint=hint, width=width, source=source))

    @property
    def filename(self) -> str:
        return self.diagnostics[0].filename

    @property
    def line(self) -> int:
        return self.diagnostics[0].line

    @property
    def column(self) -> int:
        return self.diagnostics[0].column

    @property
    def message(self) -> str:
        return self.diagnostics[0].message

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


class ParseError(SpecError):
    """The text is not in the language."""


class CheckError(SpecError):
    """The text parses but means nothing valid (names, shapes, arguments, settings)."""


class DataError(SpecError):
    """A data source cannot be read or does not fit the network."""


class CheckpointError(SpecError):
    """A checkpoint directory is missing, corrupted or does not match its spec."""


def place(span, default: str = "<spec>") -> tuple:
    """The (file, line, column) of an `ir.Span`, or (default,) when there is none: the place
    arguments of a `Diagnostic`."""
    return (default,) if span is None else (span.file, span.line, span.column)


def diagnostic(message: str, span=None, *, hint: str | None = None, width: int | None = None,
               source: str | None = None) -> Diagnostic:
    """A diagnostic at an `ir.Span` (or None: no place known)."""
    if span is None:
        return Diagnostic(message, hint=hint, source=source)
    if width is None:
        width = span.end_column - span.column if span.end_line == span.line else 1
    return Diagnostic(message, span.file, span.line, span.column, max(1, width), hint, source)


def word_span(span, word: str, text: str | None, skip: int = 0):
    """The span of `word` on the first line of `span` (searched from its column, after `skip`
    characters), so a caret can point at a name rather than at its whole statement."""
    if span is None or not text or not span.line:
        return span
    lines = source_lines(text)
    if span.line > len(lines):
        return span
    start = find_word(lines[span.line - 1], word, span.column - 1 + skip)
    if start < 0:
        return span
    return span.model_copy(update={"column": start + 1, "end_line": span.line, "end_column": start + len(word) + 1})


def _is_name_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def find_word(line: str, word: str, start: int = 0) -> int:
    """Where `word` stands on its own (not inside a longer name) in `line` from `start`, or -1."""
    i = line.find(word, start)
    while i >= 0:
        end = i + len(word)
        if (i == 0 or not _is_name_char(line[i - 1])) and (end == len(line) or not _is_name_char(line[end])):
            return i
        i = line.find(word, i + 1)
    return -1


#: How many candidate names `did_you_mean` may compare in one check (see `suggestion_budget`).
SUGGESTION_BUDGET = 200_000
_budget = [SUGGESTION_BUDGET]


def suggestion_budget(total: int = SUGGESTION_BUDGET) -> None:
    """Reset the comparisons `did_you_mean` may still make. Each hint compares the name with
    every candidate, so a spec with thousands of mistakes among thousands of names would
    take quadratic time; `check` resets the budget, and once it is spent hints are left out
    (the errors themselves are all reported)."""
    _budget[0] = total


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None."""
    if _budget[0] <= 0 or hasattr(choices, "__len__") and len(choices) > _budget[0]:
        return None
    choices = set(choices)
    _budget[0] -= max(1, len(choices))
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def listing(names: Iterable[str], limit: int = 12) -> str:
    """Names for a message, comma-separated, the first `limit` of many and how many in all."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names):,} in all)"
