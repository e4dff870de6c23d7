"""The checkpoint directory format: its file names, content hashes, reading and verifying
`meta.json`, and reading tensors (safetensors: never a pickle). `checkpoint.py` writes and
restores whole checkpoints; `cache.py` finds trained imports by content hash."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CheckpointError, Diagnostic

FORMAT = "assembler-checkpoint/1"
SPEC, WEIGHTS, META, METRICS = "spec.net", "weights.safetensors", "meta.json", "metrics.jsonl"


def error(message: str, path, hint: str | None = None) -> CheckpointError:
    return CheckpointError(Diagnostic(message, str(path), hint=hint))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_checkpoint(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / META).is_file() and (p / SPEC).is_file()


def checkpoint_dir_of(spec_path: str) -> Path | None:
    """The checkpoint a resolved import path belongs to (`.../ckpt/spec.net` -> `.../ckpt`)."""
    p = Path(spec_path)
    return p.parent if p.name == SPEC and is_checkpoint(p.parent) else None


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"not a checkpoint: {path} has no {META}", path,
                     hint="a checkpoint is a directory written by 'assembler train' or 'compile -o'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{META} is not valid JSON: {e}", path / META) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise error(f"{META} is not an assembler checkpoint of format {FORMAT}", path / META)
    return meta


def verify(path: Path, meta: dict) -> None:
    for name in dict.fromkeys((SPEC, WEIGHTS, *meta.get("hashes", {}))):
        file = path / name
        if not file.is_file():
            raise error(f"checkpoint is missing {name}", path)
        want = meta.get("hashes", {}).get(name)
        if want != sha256(file):
            raise error(f"{name} does not match its hash in {META}: the file was changed or corrupted", file,
                         hint="restore the checkpoint, or retrain it")


@lru_cache(maxsize=64)
def _tensors(weights: Path, mtime: float) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise error(f"cannot read tensors: {e}", weights, hint="the file is corrupted; retrain or restore it") \
            from None


def tensors(path: Path) -> dict[str, torch.Tensor]:
    w = path / WEIGHTS
    return _tensors(w, w.stat().st_mtime)
