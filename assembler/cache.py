"""The cache of trained imports: a spec imported with `use` that has `train` sections is
trained on demand (`assembler.train.run.ensure_trained`) and its checkpoint cached here,
keyed by a content hash of everything that determines its weights (its canonical text, its
imports' keys, its data files, the versions of assembler and torch). So are the sections a
`train --network N` run must train first (a teacher): `sections/<key>`, keyed by the spec's
networks, that section's settings and data, and the imports.

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



def _data_files(sections, base: Path) -> list[str]:
    """Fingerprints of the user data files some checked train sections read."""
    out = []
    for t in sections:
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
    from .resolve import check
    spec_path = Path(spec_path).resolve()
    spec = read(spec_path)
    parts = {"spec": format_spec(spec.model_copy(update={"comments": ()})), "assembler": __version__,
             "torch": torch.__version__, "imports": _import_keys(spec, spec_path.parent, _stack + (str(spec_path),)),
             "data": _data_files(check(spec).trains, spec_path.parent)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _import_keys(spec, base: Path, stack: tuple) -> dict[str, str]:
    out = {}
    for use in spec.uses:
        target = locate(use.path, base)
        if is_checkpoint(target):
            out[use.alias] = sha256(target / WEIGHTS)
        elif target.is_file() and str(target.resolve()) not in stack:
            out[use.alias] = spec_key(target, stack)
    return out


def section_key(spec, section) -> str:
    """The content hash that names a trained section's checkpoint in the cache: the spec's
    definitions and networks (its train sections aside), this section's settings and data files,
    the imports' keys and the versions."""
    from . import __version__, ir
    from .printer import format_spec
    base = Path(spec.filename).parent if not spec.filename.startswith("<") else Path.cwd()
    body = spec.model_copy(update={"comments": (), "items": tuple(i for i in spec.items if not isinstance(i, ir.Train))})
    parts = {"spec": format_spec(body), "settings": section.settings, "networks": list(section.networks),
             "imports": _import_keys(spec, base, ()), "data": _data_files([section], base),
             "assembler": __version__, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


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
