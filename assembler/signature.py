"""Signatures: matching call arguments to parameters, and the value checks parameters carry.

One routine (`bind`) serves op calls, template instances and plug-in calls in `train`
sections; each caller words the `BindError` for its own kind of call. The value checks
(`positive`, `fraction`, `one_of`, ...) return an error text or None and are shared by the op
table and the settings registry, so a range reads the same wherever it is checked.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

#: The largest whole number any argument or setting may hold: sizes, counts and seeds beyond
#: it are mistakes (and would overflow the float arithmetic of FLOP counts and the int64
#: tensors of the compiled network).
MAX_INT = 2**31 - 1


class BindError(Exception):
    """Why arguments do not fit a signature.

    `kind`: `too_many` (more positional arguments than parameters or than `positional`
    allows), `after_keyword` (a positional argument after a keyword one), `unknown` (no such
    parameter), `twice` (given twice), `missing` (a required parameter not given). `name` is
    the parameter concerned, `index` the position of the argument at fault (None for
    `missing`)."""

    def __init__(self, kind: str, name: str | None = None, index: int | None = None):
        super().__init__(kind if name is None else f"{kind}: {name}")
        self.kind = kind
        self.name = name
        self.index = index


def bind(names: Sequence[str], args: Iterable[tuple[str | None, Any]], *, required: Iterable[str] = (),
         positional: int | None = None) -> dict[str, Any]:
    """Match `args` (in written order: keyword or None, value) to the parameters `names`.

    Positional arguments fill the parameters in order, up to `positional` of them (all when
    None); keywords fill the rest. Returns the given values by parameter name, in parameter
    order; raises `BindError` at the first argument that does not fit, then for the first of
    `required` left unset."""
    limit = len(names) if positional is None else min(positional, len(names))
    out: dict[str, Any] = {}
    seen_keyword = False
    for i, (key, value) in enumerate(args):
        if key is None:
            if seen_keyword:
                raise BindError("after_keyword", index=i)
            if i >= limit:
                raise BindError("too_many", names[i] if i < len(names) else None, index=i)
            key = names[i]
        else:
            seen_keyword = True
            if key not in names:
                raise BindError("unknown", key, index=i)
            if key in out:
                raise BindError("twice", key, index=i)
        out[key] = value
    for name in required:
        if name not in out:
            raise BindError("missing", name)
    return {n: out[n] for n in names if n in out}


# ---------------------------------------------------------------------------------------------
# Value checks: each returns None when the value is fine, else what is wrong ("must be ...").


def positive(v) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must not be negative"


def probability(v) -> str | None:
    """A probability that cannot be 1 (dropout's p)."""
    return None if 0 <= v < 1 else "must be in [0, 1)"


def fraction(v) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def one_of(*choices) -> Callable[[Any], str | None]:
    def check(v):
        return None if v in choices else "must be " + " or ".join(show(c) for c in choices)
    return check


def at_most(limit) -> Callable[[Any], str | None]:
    def check(v):
        return None if v <= limit else f"must be at most {show(limit)}"
    return check


def all_of(*checks: Callable[[Any], str | None] | None) -> Callable[[Any], str | None]:
    """A check that passes when every one of `checks` passes (the first problem wins)."""
    real = [c for c in checks if c is not None]

    def check(v):
        for c in real:
            problem = c(v)
            if problem:
                return problem
        return None
    return check


def in_range(v) -> str | None:
    """The sanity range of every number: whole numbers within +-MAX_INT, floats finite."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return None if -MAX_INT <= v <= MAX_INT else f"is out of range (at most {MAX_INT:,} in size)"
    if isinstance(v, float):
        return None if math.isfinite(v) else "must be a finite number"
    if isinstance(v, (list, tuple)):
        return next((p for p in map(in_range, v) if p), None)
    return None


def show(v) -> str:
    """A value as the spec would write it, for messages."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        text = "[" + ", ".join(show(x) for x in v[:20]) + (", ...]" if len(v) > 20 else "]")
        return text if len(text) <= 80 else text[:76] + " ...]"
    if isinstance(v, int) and abs(v) > 10**12:
        return f"{v:.3e}" if abs(v) < 10**300 else "a number of " + str(len(str(abs(v)))) + " digits"
    return repr(v)
