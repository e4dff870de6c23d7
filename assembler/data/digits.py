"""The 8x8 hand-written digits shipped with the package (1,797 samples; see DIGITS.md)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np

from ..signature import show
from .dataset import Dataset, dataset, describe, fail

SPLITS = ("train", "test", "all")


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with resources.files("assembler.data").joinpath("digits.npz").open("rb") as fh, np.load(fh) as f:
        return f["x"], f["y"], f["test"]


def digits(split: str = "train", classes: Sequence[int] | None = None, positive: int | None = None,
           per_class: int | None = None, invert: bool = False, seed: int = 0, *, span=None) -> Dataset:
    """The 8x8 hand-written digits shipped with the package: x [N, 1, 8, 8] in [0, 1].

    `split` is "train" (1346 samples), "test" (451, a fixed stratified 25%) or "all" (1797).
    `classes=[a, b, ...]` keeps those digits, relabelled 0..n-1 in that order. `positive=c`
    is one-vs-rest: c becomes 1 and an equally large seeded sample of the other digits 0.
    `per_class=n` keeps a seeded sample of n per resulting class; `invert` gives 1 - x.
    """
    name = describe("digits", split=None if split == "train" else split, classes=classes, positive=positive,
                    per_class=per_class, invert=invert or None, seed=seed or None)
    if split not in SPLITS:
        raise fail(f"digits: split must be \"train\", \"test\" or \"all\", got {show(split)}", span)
    if classes is not None and positive is not None:
        raise fail("digits: give classes or positive, not both", span,
                   hint="positive=c is one class against the rest; classes=[...] keeps several")
    x, y, test = _digits_arrays()
    pool = np.flatnonzero(test if split == "test" else ~test if split == "train" else np.ones_like(test))
    rng = np.random.default_rng(seed)
    groups, names = (_one_vs_rest(pool, y, positive, rng, span) if positive is not None
                     else _classes(pool, y, classes, span))
    if per_class is not None:
        groups = _few(groups, per_class, split, rng, span)
    index = np.concatenate([g[1] for g in groups])
    labels = np.concatenate([np.full(len(g[1]), g[2], dtype=np.int64) for g in groups])
    order = np.argsort(index, kind="stable")  # keep the file's order
    images = x[index[order]].astype(np.float32)[:, None] / 16.0
    return dataset(1.0 - images if invert else images, labels[order], len(names), name, names)


Group = tuple[str, np.ndarray, int]  # (what it is, for messages; sample indices; label)


def _one_vs_rest(pool, y, positive, rng, span) -> tuple[list[Group], list[str]]:
    if not isinstance(positive, int) or isinstance(positive, bool) or not 0 <= positive <= 9:
        raise fail(f"digits: positive={show(positive)} names no class: digits has classes 0-9", span)
    pos, rest = pool[y[pool] == positive], pool[y[pool] != positive]
    rest = np.sort(rng.choice(rest, size=len(pos), replace=False))
    return [(f"{positive}", pos, 1), (f"rest (not {positive})", rest, 0)], [f"not {positive}", f"{positive}"]


def _classes(pool, y, classes, span) -> tuple[list[Group], list[str]]:
    wanted = list(range(10)) if classes is None else list(classes)
    if not wanted:
        raise fail("digits: classes=[] keeps no class", span)
    for c in wanted:
        if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= 9:
            raise fail(f"digits: class {show(c)} has no samples: digits has classes 0-9", span)
    if len(set(wanted)) != len(wanted):
        raise fail(f"digits: classes={show(wanted)} names a class twice", span)
    return [(f"{c}", pool[y[pool] == c], label) for label, c in enumerate(wanted)], [str(c) for c in wanted]


def _few(groups: list[Group], per_class, split: str, rng, span) -> list[Group]:
    """A seeded sample of `per_class` of each group."""
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class <= 0:
        raise fail(f"digits: per_class must be a positive whole number, got {show(per_class)}", span)
    out = []
    for what, members, label in groups:
        if per_class > len(members):
            raise fail(f"digits: per_class={per_class} but class {what} has only {len(members)} "
                       f"samples in the {split} split", span,
                       hint=f"use per_class={len(members)} or less" + (", or split=\"all\"" if split != "all" else ""))
        out.append((what, np.sort(rng.choice(members, size=per_class, replace=False)), label))
    return out
