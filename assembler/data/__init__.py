"""Data sources of `train` sections: the shipped 8x8 digits, `.npz` arrays, image folders,
label-free noise.

Each loader returns a `Dataset` (x: float32 [N, C, H, W], y: int64 [N]). The registry of
sources lives in `assembler.settings` (entries `assembler.data:digits`, `:npz`, `:folder`,
`:noise`); `load` runs a checked `data = ...` setting through it. Every problem with the data is
raised as a `DataError` located at the `span` of that setting, never as a traceback.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

from ..errors import SpecError
from .dataset import Dataset, fail, fits
from .digits import SPLITS, digits
from .files import IMAGE_SUFFIXES, folder, npz
from .noise import noise

__all__ = ["Dataset", "digits", "npz", "folder", "noise", "fits", "load", "test_split"]


def load(call: dict, base_dir: str | Path | None = None, span=None, *, seed: int | None = None,
         shape: Sequence[int] | None = None) -> Dataset:
    """Load a checked data setting `{"name": ..., "args": {...}}` through the registry.
    `base_dir` (the spec's folder), `seed` and `shape` (the trained network's input shape)
    reach the implementation when it takes them."""
    from ..settings import plugins
    table = plugins("data")
    name, args = call["name"], dict(call.get("args") or {})
    if name not in table:
        raise fail(f"unknown data source '{name}'", span, hint=f"known: {', '.join(sorted(table))}")
    try:
        impl = table[name].resolve()
    except (ImportError, AttributeError) as e:
        raise fail(f"data source '{name}' cannot be loaded: {e}", span) from None
    if impl is None:
        raise fail(f"data source '{name}' has no implementation installed", span)
    params = inspect.signature(impl).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in (("base_dir", base_dir), ("span", span), ("seed", seed), ("shape", shape)):
        if value is not None and (takes_any or key in params) and key not in args:
            args[key] = value
    try:
        data = impl(**args)
    except SpecError:
        raise
    except Exception as e:  # a plug-in's own failure: still an error at the setting, not a traceback
        raise fail(f"data source '{name}' failed: {type(e).__name__}: {e}", span) from None
    if not isinstance(data, Dataset):
        raise fail(f"data source '{name}' returned {type(data).__name__}, not an assembler.data.Dataset", span)
    return data


def test_split(call: dict) -> dict | None:
    """The evaluation data matching a training data setting: for digits the same selection
    from the test split without `per_class`; None (no default test data) for other sources."""
    if call.get("name") != "digits" or call.get("args", {}).get("split") in ("test", "all"):
        return None  # no held-out data to default to
    return {"name": "digits", "args": {**call.get("args", {}), "split": "test", "per_class": None}}


test_split.__test__ = False  # not a pytest test when imported into a test module
