"""Data sources of `train` sections: the shipped 8x8 digits, `.npz` arrays, image folders.

Each loader returns a `Dataset` (x: float32 [N, C, H, W], y: int64 [N]). The registry of
sources lives in `assembler.settings` (entries `assembler.data:digits`, `:npz`, `:folder`);
`load` runs a checked `data = ...` setting through it. Every problem with the data is raised as
a `DataError` located at the `span` of that setting, never as a traceback.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import DataError, SpecError

__all__ = ["Dataset", "digits", "npz", "folder", "fits", "load", "test_split"]

SPLITS = ("train", "test", "all")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


class Dataset(TensorDataset):
    """Samples `x` (float32 [N, C, H, W]) and labels `y` (int64 [N]) of `classes` classes.

    `name` describes the source as written in a spec, e.g. `digits(classes=[0, 1])`;
    `class_names` holds folder names (or digits) when known.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: int, name: str,
                 class_names: Sequence[str] | None = None):
        super().__init__(x, y)
        self.classes = int(classes)
        self.name = name
        self.class_names = list(class_names) if class_names is not None else None

    @property
    def x(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        return self.tensors[1]

    @property
    def labeled(self) -> bool:
        """False for label-free data (`noise`): every label is -1."""
        return self.classes > 0

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return tuple(self.x.shape[1:])

    def __repr__(self) -> str:
        return f"Dataset({self.name}: {len(self)} samples of {list(self.shape)}, {self.classes} classes)"


def _fail(message: str, span=None, hint: str | None = None) -> DataError:
    return DataError.at(message, span, hint=hint)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(i) for i in v) + "]"
    return str(v)


def _describe(name: str, positional: Sequence[Any] = (), **named: Any) -> str:
    parts = [_show(v) for v in positional] + [f"{k}={_show(v)}" for k, v in named.items() if v is not None]
    return f"{name}({', '.join(parts)})" if parts else name


def _dataset(x: np.ndarray, y: np.ndarray, classes: int, name: str, names=None) -> Dataset:
    return Dataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)), classes, name, names)


def _path(path: str | Path, base_dir: str | Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


# ---------------------------------------------------------------------------------------------
# digits


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with resources.files(__name__).joinpath("digits.npz").open("rb") as fh, np.load(fh) as f:
        return f["x"], f["y"], f["test"]


def digits(split: str = "train", classes: Sequence[int] | None = None, positive: int | None = None,
           per_class: int | None = None, invert: bool = False, seed: int = 0, *, span=None) -> Dataset:
    """The 8x8 hand-written digits shipped with the package: x [N, 1, 8, 8] in [0, 1].

    `split` is "train" (1346 samples), "test" (451, a fixed stratified 25%) or "all" (1797).
    `classes=[a, b, ...]` keeps those digits, relabelled 0..n-1 in that order. `positive=c`
    is one-vs-rest: c becomes 1 and an equally large seeded sample of the other digits 0.
    `per_class=n` keeps a seeded sample of n per resulting class; `invert` gives 1 - x.
    """
    name = _describe("digits", split=None if split == "train" else split, classes=classes, positive=positive,
                     per_class=per_class, invert=invert or None, seed=seed or None)
    if split not in SPLITS:
        raise _fail(f"digits: split must be \"train\", \"test\" or \"all\", got {_show(split)}", span)
    if classes is not None and positive is not None:
        raise _fail("digits: give classes or positive, not both", span,
                    hint="positive=c is one class against the rest; classes=[...] keeps several")
    x, y, test = _digits_arrays()
    pool = np.flatnonzero(test if split == "test" else ~test if split == "train" else np.ones_like(test))
    rng = np.random.default_rng(seed)
    if positive is not None:
        if not isinstance(positive, int) or isinstance(positive, bool) or not 0 <= positive <= 9:
            raise _fail(f"digits: positive={_show(positive)} names no class: digits has classes 0-9", span)
        pos, rest = pool[y[pool] == positive], pool[y[pool] != positive]
        rest = np.sort(rng.choice(rest, size=len(pos), replace=False))
        groups = [(f"{positive}", pos, 1), (f"rest (not {positive})", rest, 0)]
        names = [f"not {positive}", f"{positive}"]
    else:
        wanted = list(range(10)) if classes is None else list(classes)
        if not wanted:
            raise _fail("digits: classes=[] keeps no class", span)
        for c in wanted:
            if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= 9:
                raise _fail(f"digits: class {_show(c)} has no samples: digits has classes 0-9", span)
        if len(set(wanted)) != len(wanted):
            raise _fail(f"digits: classes={_show(wanted)} names a class twice", span)
        groups = [(f"{c}", pool[y[pool] == c], label) for label, c in enumerate(wanted)]
        names = [str(c) for c in wanted]
    if per_class is not None:
        if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class <= 0:
            raise _fail(f"digits: per_class must be a positive whole number, got {_show(per_class)}", span)
        for i, (what, members, label) in enumerate(groups):
            if per_class > len(members):
                raise _fail(f"digits: per_class={per_class} but class {what} has only {len(members)} "
                            f"samples in the {split} split", span,
                            hint=f"use per_class={len(members)} or less" + (", or split=\"all\"" if split != "all" else ""))
            groups[i] = (what, np.sort(rng.choice(members, size=per_class, replace=False)), label)
    index = np.concatenate([g[1] for g in groups])
    labels = np.concatenate([np.full(len(g[1]), g[2], dtype=np.int64) for g in groups])
    order = np.argsort(index, kind="stable")  # keep the file's order
    images = x[index[order]].astype(np.float32)[:, None] / 16.0
    return _dataset(1.0 - images if invert else images, labels[order], len(names), name, names)


# ---------------------------------------------------------------------------------------------
# npz


def npz(path: str | Path, base_dir: str | Path | None = None, *, span=None) -> Dataset:
    """Arrays `x` ([N, C, H, W], [N, H, W] gets a channel, or [N, D]) and integer labels `y`
    from a `.npz` file; a relative path resolves against `base_dir` (the spec's folder).
    x is cast to float32 as it is; the class count is max(y) + 1."""
    name = _describe("npz", [str(path)])
    p = _path(path, base_dir)
    if not p.is_file():
        raise _fail(f"npz: no such file: '{p}'" if not p.exists() else f"npz: '{p}' is a folder, not a file", span)
    hint = "save one with numpy.savez(path, x=samples, y=labels)"
    try:
        f = np.load(p, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise _fail(f"npz: '{p}' is a single array, not an .npz archive of x and y", span, hint=hint)
        with f:
            for key in ("x", "y"):
                if key not in f.files:
                    raise _fail(f"npz: '{p}' has no array '{key}' (it has: {', '.join(f.files) or 'none'})",
                                span, hint=hint)
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except Exception as e:  # numpy raises many kinds on a damaged file
        raise _fail(f"npz: cannot read '{p}': {e}", span, hint=hint) from None
    if x.dtype.kind not in "biuf":
        raise _fail(f"npz: x in '{p}' must hold numbers, not {x.dtype}", span)
    if x.ndim < 2:
        raise _fail(f"npz: x in '{p}' must be [N, C, H, W], [N, H, W] or [N, D], got shape {list(x.shape)}", span)
    if x.ndim == 3:
        x = x[:, None]
    if y.ndim != 1:
        raise _fail(f"npz: y in '{p}' must be one label per sample, got shape {list(y.shape)}", span)
    if len(x) != len(y):
        raise _fail(f"npz: '{p}' has {len(x)} samples in x but {len(y)} labels in y", span)
    if len(y) == 0:
        raise _fail(f"npz: '{p}' has no samples", span)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool) or y.min() < 0:
        raise _fail(f"npz: y in '{p}' must hold class numbers 0, 1, 2, ..., got "
                    + (f"{y.dtype} values" if y.dtype.kind not in "iub" else f"{int(y.min())}"), span)
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise _fail(f"npz: x in '{p}' has NaN or infinite values", span)
    return _dataset(x, y, int(y.max()) + 1, name)


# ---------------------------------------------------------------------------------------------
# folder


def folder(path: str | Path, size: Sequence[int] | None = None, base_dir: str | Path | None = None, *,
           span=None) -> Dataset:
    """Images in one sub-folder per class (class order: sorted folder names), read with Pillow.
    All-grayscale folders give 1 channel, otherwise RGB; values in [0, 1]. `size=[h, w]`
    resizes every image; without it all images must have the same size."""
    name = _describe("folder", [str(path)], size=list(size) if size is not None else None)
    root = _path(path, base_dir)
    if not root.is_dir():
        raise _fail(f"folder: no such folder: '{root}'" if not root.exists() else
                    f"folder: '{root}' is a file, not a folder of class folders", span)
    if size is not None and (not isinstance(size, (list, tuple)) or len(size) != 2 or
                             not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise _fail(f"folder: size must be [height, width] with two positive whole numbers, got {_show(size)}", span)
    try:
        from PIL import Image
    except ImportError:
        raise _fail("folder: reading images needs Pillow, which is not installed", span,
                    hint="pip install pillow") from None
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise _fail(f"folder: '{root}' has no class sub-folders", span,
                    hint="put the images of each class in a sub-folder named after the class")
    images, labels, sizes = [], [], {}
    for label, d in enumerate(class_dirs):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith("."))
        if not files:
            raise _fail(f"folder: class folder '{d}' has no images", span,
                        hint=f"image files end in {', '.join(sorted(IMAGE_SUFFIXES))}")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
                    if size is not None:
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise _fail(f"folder: cannot read image '{f}': {e}", span) from None
            sizes.setdefault((im.height, im.width), f)
            images.append(im)
            labels.append(label)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise _fail(f"folder: images differ in size: '{f1}' is {s1[0]}x{s1[1]} but '{f2}' is {s2[0]}x{s2[1]}", span,
                    hint="give size=[height, width] to resize them all")
    rgb = any(im.mode == "RGB" for im in images)
    arrays = [np.asarray(im.convert("RGB") if rgb else im, dtype=np.uint8) for im in images]
    x = np.stack(arrays).astype(np.float32) / 255.0
    x = x.transpose(0, 3, 1, 2) if rgb else x[:, None]
    return _dataset(x, np.asarray(labels), len(class_dirs), name, [d.name for d in class_dirs])


# ---------------------------------------------------------------------------------------------
# noise


NOISES = ("uniform", "normal")


def noise(n: int = 512, dist: str = "uniform", seed: int = 0, *, shape: Sequence[int] | None = None,
          span=None) -> Dataset:
    """`n` label-free samples shaped like the trained network's input: uniform in [0, 1] or
    standard normal, seeded (the section's seed is not used: `seed` names the draw). For
    procedures that train without samples (back-distillation); labels are all -1."""
    if shape is None:
        raise _fail("noise: the shape of the samples is unknown here", span,
                    hint="noise(...) makes samples shaped like the trained network's input")
    if dist not in NOISES:
        raise _fail(f"noise: dist must be \"uniform\" or \"normal\", got {_show(dist)}", span)
    g = torch.Generator().manual_seed(seed)
    size = (n, *[int(v) for v in shape])
    x = torch.rand(size, generator=g) if dist == "uniform" else torch.randn(size, generator=g)
    name = _describe("noise", n=n, dist=None if dist == "uniform" else dist, seed=seed or None)
    return Dataset(x, torch.full((n,), -1, dtype=torch.int64), 0, name)


# ---------------------------------------------------------------------------------------------
# checks and the registry


def fits(dataset: Dataset, input_shape: Sequence[int], span=None, *, input_name: str = "x",
         outputs: int | None = None) -> None:
    """Raise a DataError unless one sample of `dataset` has the network input's shape (and,
    when `outputs` is given, the network has at least as many outputs as the data has classes)."""
    have, want = [int(v) for v in dataset.x.shape[1:]], [int(v) for v in input_shape]
    if have != want:
        raise _fail(f"data {dataset.name} gives samples of shape {have} but the network's input "
                    f"{input_name} is {want}", span)
    if outputs is not None and dataset.classes > outputs:
        raise _fail(f"data {dataset.name} has {dataset.classes} classes but the network gives only "
                    f"{outputs} outputs", span)


def load(call: dict, base_dir: str | Path | None = None, span=None, *, seed: int | None = None,
         shape: Sequence[int] | None = None) -> Dataset:
    """Load a checked data setting `{"name": ..., "args": {...}}` through the registry.
    `base_dir` (the spec's folder), `seed` and `shape` (the trained network's input shape)
    reach the implementation when it takes them."""
    from ..settings import plugins
    table = plugins("data")
    name, args = call["name"], dict(call.get("args") or {})
    if name not in table:
        raise _fail(f"unknown data source '{name}'", span, hint=f"known: {', '.join(sorted(table))}")
    try:
        impl = table[name].resolve()
    except (ImportError, AttributeError) as e:
        raise _fail(f"data source '{name}' cannot be loaded: {e}", span) from None
    if impl is None:
        raise _fail(f"data source '{name}' has no implementation installed", span)
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
        raise _fail(f"data source '{name}' failed: {type(e).__name__}: {e}", span) from None
    if not isinstance(data, Dataset):
        raise _fail(f"data source '{name}' returned {type(data).__name__}, not an assembler.data.Dataset", span)
    return data


def test_split(call: dict) -> dict | None:
    """The evaluation data matching a training data setting: for digits the same selection
    from the test split without `per_class`; None (no default test data) for other sources."""
    if call.get("name") != "digits" or call.get("args", {}).get("split") in ("test", "all"):
        return None  # no held-out data to default to
    return {"name": "digits", "args": {**call.get("args", {}), "split": "test", "per_class": None}}


test_split.__test__ = False  # not a pytest test when imported into a test module
