"""Test helpers for users of `assembler`: Hypothesis strategies of valid specs and checkers.

    from hypothesis import given
    from assembler.testing import assert_round_trips, assert_valid, strategies

    @given(strategies.specs())
    def test_my_tool(spec):
        checked = assert_valid(spec)
        ...

`strategies` (see its docstring) generates valid specs as syntax IR; the checkers raise
`AssertionError` with the spec's text and the reason, so they read well in test output.
"""

from __future__ import annotations

import difflib

from .. import ir
from ..errors import SpecError
from ..graph import Checked
from . import strategies
from .strategies import networks, specs, specs_with_shapes

__all__ = ["assert_round_trips", "assert_valid", "networks", "specs", "specs_with_shapes", "strategies"]


def _text(spec: ir.Spec) -> str:
    from ..printer import format_spec
    try:
        return format_spec(spec)
    except Exception as e:  # noqa: BLE001 - only for the message
        return f"<cannot format the spec: {type(e).__name__}: {e}>\n{spec!r}"


def assert_valid(spec: ir.Spec) -> Checked:
    """Check `spec` with `assembler.check`; return the `Checked` program, or fail with its
    errors. The checked IR's invariants are verified too (`assembler.verify.verify`)."""
    from ..resolve import check
    from ..verify import verify
    try:
        checked = check(spec)
    except SpecError as e:
        raise AssertionError(f"the spec does not check:\n{e.render()}\n--- spec ---\n{_text(spec)}") from None
    return verify(checked)


def assert_round_trips(spec: ir.Spec) -> str:
    """`parse(format(spec)) == spec`, and formatting is idempotent; returns the canonical text."""
    from ..parser import parse
    from ..printer import format_spec
    text = format_spec(spec)
    try:
        back = parse(text, spec.filename)
    except SpecError as e:
        raise AssertionError(f"the formatted spec does not parse:\n{e.render()}\n--- text ---\n{text}") from None
    if back != spec:
        raise AssertionError("parse(format(spec)) != spec\n" + _first_difference(spec, back) + f"\n--- text ---\n{text}")
    again = format_spec(back)
    if again != text:
        diff = "".join(difflib.unified_diff(text.splitlines(True), again.splitlines(True), "format(spec)",
                                            "format(parse(format(spec)))"))
        raise AssertionError(f"formatting is not idempotent:\n{diff}")
    return text


def _first_difference(a: ir.Spec, b: ir.Spec) -> str:
    items_a, items_b = a.items, b.items
    if len(items_a) != len(items_b):
        return f"{len(items_a)} top-level statements became {len(items_b)}"
    for x, y in zip(items_a, items_b):
        if x != y:
            return f"this statement:\n  {x!r}\nparsed back as:\n  {y!r}"
    return "the specs differ"
