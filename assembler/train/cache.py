"""Trained imports: a spec imported with `use` that has `train` sections is trained on demand,
once, into the cache (`assembler.cache`), imports of imports first."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..cache import cache_root, lookup, spec_key


def ensure_trained(spec_path: Path, quiet: bool = False, _stack: tuple = ()) -> Path | None:
    """Train (once) a spec imported with `use` that has train sections; its checkpoint."""
    from ..resolve import read
    from .run import train_spec
    spec_path = Path(spec_path).resolve()
    spec = read(spec_path)
    for use in spec.uses:  # imports of imports first
        target = spec_path.parent / use.path
        if target.is_file() and str(target) not in _stack:
            ensure_trained(target, quiet, _stack + (str(spec_path),))
    if not spec.trains:
        return None
    found = lookup(spec_path)
    if found is not None:
        return found
    out = cache_root() / spec_key(spec_path)
    if not quiet:
        print(f"training the imported spec {os.path.relpath(spec_path)} (cached in {out})", file=sys.stderr)
    train_spec(spec, out=out, quiet=quiet, single_checkpoint=True)
    return out
