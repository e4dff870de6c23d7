"""The cache of trained imports: a spec imported with `use` that has `train` sections is
trained on demand (`assembler.train.run.ensure_trained`) and its checkpoint cached here,
keyed by a content hash of everything that determines its weights (its canonical text, its
imports' keys, its data files, the versions of assembler and torch).

The cache lives in $ASSEMBLER_CACHE, or ~/.cache/assembler.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .locate import cache_root, locate
from .store import WEIGHTS, is_checkpoint, read_meta, sha256

def _data_files(spec, base: Path) -> list[str]:
    """Fingerprints of the user data files a spec's train sections read."""
    from .resolve import check
    out = []
    for t in check(spec).trains:
        for key in ("data", "test"):
            calls = t.settings.get(key)
            for c in calls if isinstance(calls, list) else [calls] if calls else []:
                path = c.get("args", {}).get("path")
                if not path:
                    continue
                p = base / path
                if p.is_file():
                    out.append(f"{path}:{sha256(p)}")
                elif p.is_dir():
                    files = sorted(f for f in p.rglob("*") if f.is_file())
                    out.append(path + ":" + hashlib.sha256("".join(
                        f"{f.relative_to(p)}:{f.stat().st_size}:{f.stat().st_mtime_ns};" for f in files).encode()
                    ).hexdigest())
    return out


def spec_key(spec_path: Path, _stack: tuple = ()) -> str:
    """The content hash that names a spec's trained checkpoint in the cache."""
    from . import __version__
    from .printer import format_spec
    from .resolve import read
    spec_path = Path(spec_path).resolve()
    spec = read(spec_path)
    parts = {"spec": format_spec(spec.model_copy(update={"comments": ()})), "assembler": __version__,
             "torch": torch.__version__, "imports": {}, "data": _data_files(spec, spec_path.parent)}
    for use in spec.uses:
        target = spec_path.parent / use.path
        if is_checkpoint(target):
            parts["imports"][use.alias] = sha256(target / WEIGHTS)
        elif target.is_file() and str(target.resolve()) not in _stack:
            parts["imports"][use.alias] = spec_key(target, _stack + (str(spec_path),))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def lookup(spec_path: Path) -> Path | None:
    """The cached trained checkpoint of a spec file, or None."""
    spec_path = Path(spec_path)
    if not spec_path.is_file():
        return None
    try:
        d = cache_root() / spec_key(spec_path)
    except Exception:  # an unreadable or invalid spec has no cache entry; checking reports it
        return None
    if is_checkpoint(d):
        train = read_meta(d).get("train", {})
        if train.get("complete"):
            return d
    return None
