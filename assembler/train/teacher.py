"""Teachers named in procedure settings: a network of the same spec, or an imported one
(`alias` or `alias.network`), run frozen in eval mode."""

from __future__ import annotations

from torch import fx

from ..errors import Diagnostic, SpecError


def teacher_network(ctx, name: str, taps=()) -> fx.GraphModule:
    """The teacher as a GraphModule (with `taps`: returning `(outputs, {binding: value})`)."""
    try:
        gm = ctx.asm.network(name, taps)
    except KeyError as e:
        raise SpecError(Diagnostic(f"no teacher network '{name}': {e.args[0]}", ctx.asm.checked.filename)) from None
    gm.eval()
    return gm
