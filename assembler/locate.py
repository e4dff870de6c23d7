"""Where a `use` import lives. A spec written by hand imports spec files and checkpoint
directories by path, relative to the importing file. A saved checkpoint imports other
checkpoints by content id (`use "sha256:3f2a...c1" as pre`), so it works wherever it is
copied: the id is looked up, in order,

  1. in the checkpoint's own `imports/` folder (`assembler bundle` puts every import there),
     and beside it when the checkpoint itself is a bundled import;
  2. in every folder of $ASSEMBLER_PATH (checkpoints in it, or named by id);
  3. in the cache's index of checkpoints by id ($ASSEMBLER_CACHE, or ~/.cache/assembler).

A checkpoint's spec may import by id only: a path in it is refused, so a copied checkpoint
never reads files outside these places. Torch-free (the front end uses it)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

ID = re.compile(r"sha256:([0-9a-f]{32,64})")
SPEC, WEIGHTS, META = "spec.net", "weights.safetensors", "meta.json"  # a checkpoint's files (store.py)
IMPORTS = "imports"  # a checkpoint's folder of bundled imports, by id
INDEX = "ids"  # the cache's folder of checkpoints (or pointer files to them) by id


class NotFound(Exception):
    """An import that cannot be located; the message says where it was looked for."""


def content_id(spec_hash: str, weights_hash: str) -> str:
    """A checkpoint's content id: the hash of its spec's and its weights' hashes (the spec
    names its imports by their ids, so the id covers every checkpoint it depends on)."""
    return hashlib.sha256(f"{spec_hash}:{weights_hash}".encode()).hexdigest()[:32]


def cache_root() -> Path:
    return Path(os.environ.get("ASSEMBLER_CACHE") or Path.home() / ".cache" / "assembler")


def is_id(text: str) -> bool:
    return ID.fullmatch(text) is not None


def locate(text: str, base: Path, *, in_checkpoint: bool = False) -> Path:
    """The file or checkpoint directory a `use` names, from the importing file's folder `base`.
    `in_checkpoint`: the importer is a checkpoint's spec (ids only)."""
    m = ID.fullmatch(text)
    if m is None:
        if in_checkpoint:
            raise NotFound(f"a checkpoint's spec imports by content id, not by the path {text!r}",)
        return base / text
    return find_id(m.group(1), base)


def find_id(cid: str, base: Path) -> Path:
    """The checkpoint directory with content id `cid`, searched as the module docstring says."""
    tried = []
    searched = {Path(p) for p in os.environ.get("ASSEMBLER_PATH", "").split(os.pathsep) if p}
    for folder in _search_folders(base):
        tried.append(str(folder))
        hit = _in_folder(folder, cid) or (_by_content(folder, cid) if folder in searched else None)
        if hit is not None:
            return hit
    raise NotFound(f"no checkpoint with id sha256:{cid} (looked in {', '.join(tried)})")


def _search_folders(base: Path) -> list[Path]:
    folders = [base / IMPORTS]
    if base.parent.name == IMPORTS:  # a bundled import: its siblings are the bundle's other imports
        folders.append(base.parent)
    folders += [Path(p) for p in os.environ.get("ASSEMBLER_PATH", "").split(os.pathsep) if p]
    folders.append(cache_root() / INDEX)
    return folders


def _in_folder(folder: Path, cid: str) -> Path | None:
    entry = folder / cid
    if entry.is_dir():
        return entry
    if entry.is_file():  # a pointer: the absolute path of a checkpoint kept elsewhere (the cache's)
        target = Path(entry.read_text(encoding="utf-8").strip())
        return target if target.is_dir() else None
    return None


def _by_content(folder: Path, cid: str) -> Path | None:
    """The checkpoint directly in `folder`, under any name, whose content id is `cid` (its
    files are verified against meta.json when it is loaded)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return None
    for d in entries:
        try:
            hashes = json.loads((d / META).read_text(encoding="utf-8"))["hashes"]
            if content_id(hashes[SPEC], hashes[WEIGHTS]) == cid:
                return d
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def register(cid: str, checkpoint: Path) -> None:
    """Record in the cache's index where the checkpoint with id `cid` is (a pointer file)."""
    index = cache_root() / INDEX
    index.mkdir(parents=True, exist_ok=True)
    entry = index / cid
    if entry.is_dir():
        return
    tmp = index / f".{cid}.{os.getpid()}.tmp"
    tmp.write_text(str(checkpoint.resolve()) + "\n", encoding="utf-8")
    os.replace(tmp, entry)
