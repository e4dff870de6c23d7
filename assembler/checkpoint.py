"""Checkpoint directories: `spec.net` (the resolved spec), `weights.safetensors` (only the
tensors this spec owns), `meta.json` (versions, hashes, settings, seed, metrics) and, after
training, `metrics.jsonl`. Written atomically; loading verifies hashes and shapes and never
unpickles anything.

Imported blocks are not stored again: `meta.json` names each import's checkpoint and the
hash of its weights, and loading follows those references.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .cache import lookup
from .store import (FORMAT, META, METRICS, SPEC, WEIGHTS, checkpoint_dir_of, error, is_checkpoint, read_meta,
                    sha256, tensors, verify)

# ---------------------------------------------------------------------------------------------
# Saving


def save(asm, path: str | os.PathLike, *, settings: dict | None = None, metrics: dict | None = None,
         metrics_lines: list[dict] | None = None, extra: dict | None = None,
         files: dict[str, bytes] | None = None) -> Path:
    """Write a checkpoint directory atomically: readers see the old one or the new one."""
    from .printer import format_spec
    from .resolve import expand
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if asm.spec is None:
        raise ValueError("save needs an Assembly compiled from a Spec")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        spec, imports = _relocated(expand(asm.spec), target)
        (tmp / SPEC).write_text(format_spec(spec), encoding="utf-8")
        tensors = {k: v.detach().contiguous().cpu() for k, v in asm.state(owned_only=True).items()}
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        meta = {
            "format": FORMAT,
            "assembler": _pkg_version(),
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "networks": asm.names,
            "seed": asm.seed,
            "settings": settings or {},
            "metrics": metrics or {},
            "hashes": {SPEC: sha256(tmp / SPEC), WEIGHTS: sha256(tmp / WEIGHTS),
                       **{name: hashlib.sha256(blob).hexdigest() for name, blob in (files or {}).items()}},
            "imports": imports,
            **(extra or {}),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for name, blob in (files or {}).items():
            (tmp / name).write_bytes(blob)
        if metrics_lines is not None:
            (tmp / METRICS).write_text("".join(json.dumps(m) + "\n" for m in metrics_lines), encoding="utf-8")
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_in(tmp: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _pkg_version() -> str:
    from . import __version__
    return __version__


def _relocated(spec, target: Path):
    """The spec with `use` paths rewritten to resolve from the new checkpoint directory, and
    the imports' references (path and weights hash) for meta.json."""
    from . import ir
    base = Path(spec.filename).parent if not spec.filename.startswith("<") else Path.cwd()
    items, imports = [], {}
    for item in spec.items:
        if isinstance(item, ir.Use):
            src = (base / item.path)
            ckpt = src if is_checkpoint(src) else trained_checkpoint(src)
            dest = ckpt if ckpt is not None else src
            rel = os.path.relpath(dest.resolve(), target.resolve())
            imports[item.alias] = {"path": rel, "weights": sha256(ckpt / WEIGHTS) if ckpt else None}
            item = item.model_copy(update={"path": rel})
        items.append(item)
    return spec.model_copy(update={"items": tuple(items), "comments": ()}), imports


def trained_checkpoint(spec_path: Path) -> Path | None:
    """The cached trained checkpoint of a spec file, if `train` has built one."""
    return lookup(spec_path)


# ---------------------------------------------------------------------------------------------
# Loading


def restore(path: str | os.PathLike):
    """Load a checkpoint directory as an Assembly with its weights (hashes and shapes verified)."""
    from .compiler import compile
    from .resolve import read
    p = Path(path)
    meta = read_meta(p)
    verify(p, meta)
    asm = compile(read(p / SPEC), seed=int(meta.get("seed", 0)))
    attach_imports(asm, expected=meta.get("imports", {}), where=p)
    load_weights(asm, p)
    asm.meta = meta
    asm.path = p
    return asm


def _where(checked, key: str) -> str:
    for net in checked.networks.values():
        for n in net.nodes:
            if n.module == key:
                span = f" ({n.span})" if n.span else ""
                return f"binding '{n.binding}' of network '{net.name}'{span}"
    return f"module '{key}'"


def load_weights(asm, path: Path) -> None:
    """Copy a checkpoint's tensors into the modules this Assembly owns (shapes and names verified)."""
    checked = asm.checked
    stored = tensors(path)
    wanted = asm.state(owned_only=True)
    for key, t in stored.items():
        if key not in wanted:
            raise error(f"tensor '{key}' belongs to nothing in {SPEC}", path / WEIGHTS,
                         hint="the weights and the spec do not match; retrain or restore the checkpoint")
    for key, t in wanted.items():
        if key not in stored:
            raise error(f"no tensor '{key}' for {_where(checked, _module_key(asm, key))}", path / WEIGHTS)
        if tuple(stored[key].shape) != tuple(t.shape):
            raise error(f"tensor '{key}' has shape {list(stored[key].shape)} but "
                         f"{_where(checked, _module_key(asm, key))} needs {list(t.shape)}", path / WEIGHTS)
    with torch.no_grad():
        for key, t in wanted.items():
            t.copy_(stored[key])


def _module_key(asm, tensor_key: str) -> str:
    best = ""
    for key in asm.modules:
        if tensor_key.startswith(key + ".") and len(key) > len(best):
            best = key
    return best or tensor_key


def import_checkpoint(spec_path: Path) -> Path | None:
    """The checkpoint that supplies an import's weights: the directory itself for an imported
    checkpoint, the cached trained checkpoint for a spec file, None for an untrained spec."""
    ckpt = checkpoint_dir_of(str(spec_path))
    if ckpt is not None:
        verify(ckpt, read_meta(ckpt))
        return ckpt
    return trained_checkpoint(spec_path)


def attach_imports(asm, *, expected: dict | None = None, where: Path | None = None, reuse: dict | None = None) -> None:
    """Resolve the weights of an Assembly's imported blocks: restore each imported spec's
    checkpoint as an Assembly of its own (`asm.imports[alias]`, its modules frozen) and make the
    imported blocks those very modules, then start `copy(...)` modules from them. An untrained
    imported spec keeps random weights, with a warning. `expected`: the weights hashes a saved
    checkpoint recorded for its imports (meta.json), checked; `reuse`: imports already attached
    elsewhere (alias -> Assembly), taken as they are."""
    from .compiler import compile, init_copies
    from .modules import freeze
    from .resolve import read
    for alias, path in asm.checked.imports.items():
        if reuse and alias in reuse:
            sub = reuse[alias]
        else:
            spec_path = Path(path)
            ckpt = import_checkpoint(spec_path)
            if ckpt is None:
                asm.warnings.append(
                    f"'{alias}' imports {spec_path.name}, which has not been trained: its blocks are randomly "
                    f"initialised. Train it first: assembler train {os.path.relpath(spec_path)}")
                sub = compile(read(spec_path), seed=asm.seed)
                attach_imports(sub)
            else:
                _check_import_hash(alias, ckpt, (expected or {}).get(alias), where)
                sub = restore(ckpt)
            for m in sub.modules.values():
                freeze(m)
            sub.edges.requires_grad_(False)
        asm.imports[alias] = sub
        for key, decl in asm.checked.modules.items():
            if decl.imported_from == alias:
                asm.modules[key] = sub.modules[decl.origin]
    asm._graphs.clear()
    init_copies(asm)


def _check_import_hash(alias: str, ckpt: Path, recorded: dict | None, where: Path | None) -> None:
    want = (recorded or {}).get("weights")
    if want and want != sha256(ckpt / WEIGHTS):
        raise error(f"the checkpoint imported as '{alias}' ({ckpt}) changed since {where} was saved "
                     "(its weights hash differs)", where / META if where else ckpt,
                     hint="retrain the checkpoint that imports it")


def metrics_lines(path: Path) -> list[dict[str, Any]]:
    file = path / METRICS
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
