"""Label-free random samples for zero-sample training (back-distillation)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..signature import show
from .dataset import Dataset, describe, fail


NOISES = ("uniform", "normal")


def noise(n: int = 512, dist: str = "uniform", seed: int = 0, *, shape: Sequence[int] | None = None,
          span=None) -> Dataset:
    """`n` label-free samples shaped like the trained network's input: uniform in [0, 1] or
    standard normal, seeded (the section's seed is not used: `seed` names the draw). For
    procedures that train without samples (back-distillation); labels are all -1."""
    if shape is None:
        raise fail("noise: the shape of the samples is unknown here", span,
                    hint="noise(...) makes samples shaped like the trained network's input")
    if dist not in NOISES:
        raise fail(f"noise: dist must be \"uniform\" or \"normal\", got {show(dist)}", span)
    g = torch.Generator().manual_seed(seed)
    size = (n, *[int(v) for v in shape])
    x = torch.rand(size, generator=g) if dist == "uniform" else torch.randn(size, generator=g)
    name = describe("noise", n=n, dist=None if dist == "uniform" else dist, seed=seed or None)
    return Dataset(x, torch.full((n,), -1, dtype=torch.int64), 0, name)
