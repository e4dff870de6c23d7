"""Data from the user's files: arrays in an `.npz` file, images in one folder per class."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..signature import show
from .dataset import Dataset, dataset, describe, fail, guard_size
from .dataset import path as path_of

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def npz(path: str | Path, base_dir: str | Path | None = None, *, span=None) -> Dataset:
    """Arrays `x` ([N, C, H, W], [N, H, W] gets a channel, or [N, D]) and integer labels `y`
    from a `.npz` file; a relative path resolves against `base_dir` (the spec's folder).
    x is cast to float32 as it is; the class count is max(y) + 1."""
    p = path_of(path, base_dir)
    if not p.is_file():
        raise fail(f"npz: no such file: '{p}'" if not p.exists() else f"npz: '{p}' is a folder, not a file", span)
    guard_size(p.stat().st_size, p, "npz", span)
    x, y = _arrays(p, span)
    x, y = _samples(x, p, span), _labels(y, len(x), p, span)
    return dataset(x, y, int(y.max()) + 1, describe("npz", [str(path)]))


_NPZ_HINT = "save one with numpy.savez(path, x=samples, y=labels)"


def _arrays(p: Path, span) -> tuple[np.ndarray, np.ndarray]:
    """x and y of an .npz archive (never unpickling)."""
    try:
        f = np.load(p, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise fail(f"npz: '{p}' is a single array, not an .npz archive of x and y", span, hint=_NPZ_HINT)
        with f:
            for key in ("x", "y"):
                if key not in f.files:
                    raise fail(f"npz: '{p}' has no array '{key}' (it has: {', '.join(f.files) or 'none'})",
                               span, hint=_NPZ_HINT)
            return f["x"], f["y"]
    except DataError:
        raise
    except Exception as e:  # numpy raises many kinds on a damaged file
        raise fail(f"npz: cannot read '{p}': {e}", span, hint=_NPZ_HINT) from None


def _samples(x: np.ndarray, p: Path, span) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise fail(f"npz: x in '{p}' must hold numbers, not {x.dtype}", span)
    if x.ndim < 2:
        raise fail(f"npz: x in '{p}' must be [N, C, H, W], [N, H, W] or [N, D], got shape {list(x.shape)}", span)
    x = (x[:, None] if x.ndim == 3 else x).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise fail(f"npz: x in '{p}' has NaN or infinite values", span)
    return x


def _labels(y: np.ndarray, n: int, p: Path, span) -> np.ndarray:
    if y.ndim != 1:
        raise fail(f"npz: y in '{p}' must be one label per sample, got shape {list(y.shape)}", span)
    if n != len(y):
        raise fail(f"npz: '{p}' has {n} samples in x but {len(y)} labels in y", span)
    if len(y) == 0:
        raise fail(f"npz: '{p}' has no samples", span)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool) or y.min() < 0:
        raise fail(f"npz: y in '{p}' must hold class numbers 0, 1, 2, ..., got "
                   + (f"{y.dtype} values" if y.dtype.kind not in "iub" else f"{int(y.min())}"), span)
    return y


def folder(path: str | Path, size: Sequence[int] | None = None, base_dir: str | Path | None = None, *,
           span=None) -> Dataset:
    """Images in one sub-folder per class (class order: sorted folder names), read with Pillow.
    All-grayscale folders give 1 channel, otherwise RGB; values in [0, 1]. `size=[h, w]`
    resizes every image; without it all images must have the same size."""
    root = path_of(path, base_dir)
    if not root.is_dir():
        raise fail(f"folder: no such folder: '{root}'" if not root.exists() else
                   f"folder: '{root}' is a file, not a folder of class folders", span)
    if size is not None and (not isinstance(size, (list, tuple)) or len(size) != 2 or
                             not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise fail(f"folder: size must be [height, width] with two positive whole numbers, got {show(size)}", span)
    Image = _pil(span)
    classes = _class_files(root, span)
    guard_size(sum(f.stat().st_size for files in classes.values() for f in files), root, "folder", span)
    images, labels = [], []
    for label, files in enumerate(classes.values()):
        images += [(_image(Image, f, size, span), f) for f in files]
        labels += [label] * len(files)
    x = _stack(images, span)
    name = describe("folder", [str(path)], size=list(size) if size is not None else None)
    return dataset(x, np.asarray(labels), len(classes), name, [d.name for d in classes])


def _class_files(root: Path, span) -> dict[Path, list[Path]]:
    """The image files of each class folder (sorted), every class with one at least."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise fail(f"folder: '{root}' has no class sub-folders", span,
                   hint="put the images of each class in a sub-folder named after the class")
    out = {}
    for d in class_dirs:
        out[d] = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                        and not f.name.startswith("."))
        if not out[d]:
            raise fail(f"folder: class folder '{d}' has no images", span,
                       hint=f"image files end in {', '.join(sorted(IMAGE_SUFFIXES))}")
    return out


def _pil(span):
    try:
        from PIL import Image
    except ImportError:
        raise fail("folder: reading images needs Pillow, which is not installed", span,
                   hint="pip install pillow") from None
    return Image


def _image(Image, f: Path, size, span):
    """One image, grayscale ("L") or RGB, resized to `size` when given."""
    try:
        with Image.open(f) as im:
            im = im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
            if size is not None:
                im = im.resize((size[1], size[0]), Image.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise fail(f"folder: cannot read image '{f}': {e}", span) from None
    return im


def _stack(images: list, span) -> np.ndarray:
    """The images ((image, file) pairs) as one float array [N, C, H, W] in [0, 1]: all grayscale,
    or all RGB."""
    sizes = {}
    for im, f in images:
        sizes.setdefault((im.height, im.width), f)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise fail(f"folder: images differ in size: '{f1}' is {s1[0]}x{s1[1]} but '{f2}' is {s2[0]}x{s2[1]}", span,
                   hint="give size=[height, width] to resize them all")
    rgb = any(im.mode == "RGB" for im, _ in images)
    arrays = [np.asarray(im.convert("RGB") if rgb else im, dtype=np.uint8) for im, _ in images]
    x = np.stack(arrays).astype(np.float32) / 255.0
    return x.transpose(0, 3, 1, 2) if rgb else x[:, None]
