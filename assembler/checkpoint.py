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
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .atomic import make_temp_dir, normal_permissions, recover, replace_dir
from .cache import lookup
from .locate import IMPORTS, locate, register
from .store import (FORMAT, META, META_HASH, METRICS, SPEC, WEIGHTS, checkpoint_dir_of, checkpoint_id, error,
                    is_checkpoint, read_meta, sha256, tensors, verify)

# ---------------------------------------------------------------------------------------------
# Saving


def save(asm, path: str | os.PathLike, *, settings: dict | None = None, metrics: dict | None = None,
         metrics_lines: list[dict] | None = None, extra: dict | None = None,
         files: dict[str, bytes] | None = None) -> Path:
    """Write a checkpoint directory atomically: readers see the old one or the new one, and a
    crash at any point leaves one of them (`assembler.atomic`)."""
    from .printer import format_spec
    from .resolve import expand
    target = Path(path)
    if asm.spec is None:
        raise ValueError("save needs an Assembly compiled from a Spec")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tmp = make_temp_dir(target)
    try:
        spec, imports = _by_id(expand(asm.spec), target)
        (tmp / SPEC).write_text(format_spec(spec), encoding="utf-8")
        tensors = {k: v.detach().contiguous().cpu() for k, v in asm.state(owned_only=True).items()}
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        for name, blob in (files or {}).items():
            (tmp / name).write_bytes(blob)
        if metrics_lines is not None:
            (tmp / METRICS).write_text("".join(json.dumps(m) + "\n" for m in metrics_lines), encoding="utf-8")
        meta = _meta(asm, tmp, settings, metrics, imports, files, extra)
        raw = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")
        (tmp / META).write_bytes(raw)
        (tmp / META_HASH).write_text(hashlib.sha256(raw).hexdigest() + "\n", encoding="ascii")  # last: complete
        normal_permissions(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    register(checkpoint_id(meta), target)
    return target


def _meta(asm, tmp: Path, settings, metrics, imports, files, extra) -> dict:
    """meta.json's content: versions, what was trained how, and the hashes of the other files."""
    return {
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


def _pkg_version() -> str:
    from . import __version__
    return __version__


def _by_id(spec, target: Path):
    """The spec with every `use` naming its checkpoint by content id (`sha256:...`), so the saved
    checkpoint works wherever it is copied, and the imports' references for meta.json (id, the
    weights' hash, where it was). An import that has no checkpoint yet is an error: train it."""
    from . import ir
    base = Path(spec.filename).parent if not spec.filename.startswith("<") else Path.cwd()
    items, imports = [], {}
    for item in spec.items:
        if isinstance(item, ir.Use):
            src = locate(item.path, base)
            ckpt = src if is_checkpoint(src) else trained_checkpoint(src)
            if ckpt is None:
                raise error(f"cannot save {target}: the import '{item.alias}' ({item.path}) has not been trained",
                            target, hint=f"train it first: assembler train {os.path.relpath(src)}")
            meta = read_meta(ckpt)
            cid = checkpoint_id(meta)
            register(cid, ckpt)
            imports[item.alias] = {"id": cid, "weights": meta["hashes"][WEIGHTS], "origin": str(ckpt.resolve())}
            item = item.model_copy(update={"path": f"sha256:{cid}"})
        items.append(item)
    return spec.model_copy(update={"items": tuple(items), "comments": ()}), imports


def bundle(path: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Copy a checkpoint to `out` with every checkpoint it imports (and theirs) inside its
    `imports/` folder, so that one directory travels alone. Returns the ids bundled."""
    src, out = Path(path), Path(out)
    recover(src)
    verify(src, read_meta(src))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out)
    try:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        done: list[str] = []
        todo = [(src, ref["id"]) for ref in read_meta(src).get("imports", {}).values() if ref.get("id")]
        while todo:
            base, cid = todo.pop()
            if cid in done:
                continue
            found = locate(f"sha256:{cid}", base)
            meta = read_meta(found)
            verify(found, meta)
            shutil.copytree(found, tmp / IMPORTS / cid, ignore=shutil.ignore_patterns(IMPORTS, ".*"))
            done.append(cid)
            todo += [(found, ref["id"]) for ref in meta.get("imports", {}).values() if ref.get("id")]
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return done


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
    recover(p)
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
        if stored[key].dtype != t.dtype:
            raise error(f"tensor '{key}' is {str(stored[key].dtype).replace('torch.', '')} but "
                        f"{_where(checked, _module_key(asm, key))} needs {str(t.dtype).replace('torch.', '')}",
                        path / WEIGHTS, hint="the weights were changed; restore the checkpoint, or retrain it")
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
