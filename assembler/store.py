"""The checkpoint directory format: its file names, content hashes, reading and verifying
`meta.json`, and reading tensors (safetensors: never a pickle). `checkpoint.py` writes and
restores whole checkpoints; `cache.py` finds trained imports by content hash."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import torch
from safetensors import SafetensorError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from safetensors.torch import load_file

from .errors import CheckpointError, Diagnostic
from .locate import META, SPEC, WEIGHTS, content_id

FORMAT = "assembler-checkpoint/2"
FORMATS = ("assembler-checkpoint/1", FORMAT)  # /1: imports by path, meta.json not hashed
METRICS = "metrics.jsonl"
META_HASH = "meta.json.sha256"  # the hash of meta.json, which holds the hashes of the other files


def error(message: str, path, hint: str | None = None) -> CheckpointError:
    return CheckpointError(Diagnostic(message, str(path), hint=hint))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_checkpoint(path: str | os.PathLike) -> bool:
    try:
        p = Path(path)
        return p.is_dir() and (p / META).is_file() and (p / SPEC).is_file()
    except OSError:  # a symlink loop, a name too long
        return False


def checkpoint_dir_of(spec_path: str) -> Path | None:
    """The checkpoint a resolved import path belongs to (`.../ckpt/spec.net` -> `.../ckpt`)."""
    p = Path(spec_path)
    return p.parent if p.name == SPEC and is_checkpoint(p.parent) else None


def checkpoint_id(meta: dict) -> str:
    """A checkpoint's content id: the hash of its spec's and its weights' hashes. The spec names
    its imports by their ids, so the id covers every checkpoint it depends on."""
    return content_id(meta["hashes"][SPEC], meta["hashes"][WEIGHTS])


FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$", max_length=100)]
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ImportRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str | None = None  # content id of the imported checkpoint
    weights: Hash | None = None  # the hash of its weights when this checkpoint was saved
    path: str | None = None  # format /1: where it was, relative to this checkpoint
    origin: str | None = None  # where it was when this checkpoint was saved (informative)


class TrainMeta(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    stage: int = Field(0, ge=0)
    epoch: int = Field(0, ge=0)
    step: int = Field(0, ge=0)
    complete: bool = False
    history: list[dict] = []
    networks: list[str] = []


class Meta(BaseModel):
    """What meta.json must hold, with types checked (a tampered or damaged file is an error,
    never a crash further on)."""

    model_config = ConfigDict(extra="allow", strict=True)
    format: str
    seed: int = Field(0, ge=0, lt=2 ** 63)
    networks: list[str] = []
    settings: dict = {}
    metrics: dict = {}
    hashes: dict[FileName, Hash]
    imports: dict[str, ImportRef] = {}
    train: TrainMeta | None = None
    base_dir: str | None = None


def read_meta(path: Path) -> dict:
    """meta.json of a checkpoint directory, its own hash and its fields' types checked."""
    path = Path(path)
    if not _is_dir(path):
        raise error(f"not a checkpoint: {path} is {'a file' if path.is_file() else 'not a directory'}", path,
                    hint="a checkpoint is a directory written by 'assembler train' or 'compile -o'")
    try:
        raw = (path / META).read_bytes()
        meta = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise error(f"not a checkpoint: {path} has no {META}", path,
                    hint="a checkpoint is a directory written by 'assembler train' or 'compile -o'") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{META} is not valid JSON: {type(e).__name__}: {str(e)[:200]}", path / META,
                    hint="restore the checkpoint, or retrain it") from None
    except OSError as e:
        raise error(f"cannot read {META}: {e.strerror or e}", path / META) from None
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        raise error(f"{META} is not an assembler checkpoint (format {' or '.join(FORMATS)})", path / META)
    if meta["format"] != FORMATS[0]:
        _check_meta_hash(path, raw)
    try:
        Meta.model_validate(meta)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise error(f"{META} is damaged: '{where}': {first['msg']}", path / META,
                    hint="restore the checkpoint, or retrain it") from None
    if SPEC not in meta["hashes"] or WEIGHTS not in meta["hashes"]:
        raise error(f"{META} is damaged: it lists no hash of {SPEC} or {WEIGHTS}", path / META)
    return meta


def _check_meta_hash(path: Path, raw: bytes) -> None:
    try:
        want = (path / META_HASH).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise error(f"checkpoint is missing {META_HASH}", path, hint="restore the checkpoint, or retrain it") from None
    if want != hashlib.sha256(raw).hexdigest():
        raise error(f"{META} does not match its hash in {META_HASH}: the file was changed or corrupted",
                    path / META, hint="restore the checkpoint, or retrain it")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError as e:  # ELOOP: a symlink loop
        raise error(f"not a checkpoint: {path}: {e.strerror or e}", path) from None


def verify(path: Path, meta: dict) -> None:
    """Every file meta.json lists is there and has its hash."""
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
