"""What every data source returns (`Dataset`), the helpers the sources share, the size guard on
data files, and the check that a data set fits the network it trains."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import DataError
from ..signature import show


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


def fail(message: str, span=None, hint: str | None = None) -> DataError:
    return DataError.at(message, span, hint=hint)


def describe(name: str, positional: Sequence[Any] = (), **named: Any) -> str:
    parts = [show(v) for v in positional] + [f"{k}={show(v)}" for k, v in named.items() if v is not None]
    return f"{name}({', '.join(parts)})" if parts else name


def dataset(x: np.ndarray, y: np.ndarray, classes: int, name: str, names=None) -> Dataset:
    return Dataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)), classes, name, names)


def path(path: str | Path, base_dir: str | Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def max_data_bytes() -> int:
    """The largest data file (or image folder) read: 4 GiB, or ASSEMBLER_MAX_DATA_BYTES."""
    try:
        return int(os.environ.get("ASSEMBLER_MAX_DATA_BYTES", 4 * 2**30))
    except ValueError:
        return 4 * 2**30


def guard_size(size: int, where: Path, what: str, span=None) -> None:
    """Refuse a data file or folder larger than the limit, before reading it."""
    limit = max_data_bytes()
    if size > limit:
        raise fail(f"{what}: '{where}' holds {size:,} bytes, more than the limit of {limit:,} for data", span,
                   hint="raise the limit with the environment variable ASSEMBLER_MAX_DATA_BYTES")


def fits(dataset: Dataset, input_shape: Sequence[int], span=None, *, input_name: str = "x",
         outputs: int | None = None) -> None:
    """Raise a DataError unless one sample of `dataset` has the network input's shape (and,
    when `outputs` is given, the network has at least as many outputs as the data has classes)."""
    have, want = [int(v) for v in dataset.x.shape[1:]], [int(v) for v in input_shape]
    if have != want:
        raise fail(f"data {dataset.name} gives samples of shape {have} but the network's input "
                    f"{input_name} is {want}", span)
    if outputs is not None and dataset.classes > outputs:
        raise fail(f"data {dataset.name} has {dataset.classes} classes but the network gives only "
                    f"{outputs} outputs", span)
