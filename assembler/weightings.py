"""The weightings of matching edges (`match ... : WEIGHTING`), one torch-free entry each.

An entry gives the options the weighting takes and the shapes its two ends need; the torch
side attaches the edge module to the same name (`assembler.matching.register_edge`). The
checker, the spec generator and pictures read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ops import Arg
from .signature import non_negative


@dataclass(frozen=True)
class Weighting:
    """A weighting: `args` are its options (`meta(hidden=16)`); `shapes` is "equal" (both ends
    the same shape, any rank) or "maps" (both ends feature maps [C, H, W], sizes may differ)."""

    name: str
    args: tuple[Arg, ...] = ()
    shapes: str = "maps"
    doc: str = ""


WEIGHTINGS: dict[str, Weighting] = {}


def register_weighting(w: Weighting) -> Weighting:
    """Add a weighting to the table (a name can be registered once)."""
    if w.name in WEIGHTINGS and WEIGHTINGS[w.name] is not w:
        raise ValueError(f"weighting '{w.name}' is already registered")
    WEIGHTINGS[w.name] = w
    return w


for _w in [
    Weighting("l2", (), "equal", "||T_n - S_m||^2 between equal shapes (NetTailor's teacher term)"),
    Weighting("fitnet", (), "maps", "||r(T_n) - S_m||^2 with a trainable 1x1 regressor r; the source resized to "
              "the target's size when they differ"),
    Weighting("attention", (), "maps", "attention transfer between the two maps"),
    Weighting("meta", (Arg("hidden", int, 0, non_negative), Arg("where", bool, True)), "maps",
              "L2T-ww: per-pair meta-networks weigh channels (what) and pairs (where, or lambda = 1 with "
              "where=false: L2T-w), on top of fitnet"),
]:
    register_weighting(_w)
