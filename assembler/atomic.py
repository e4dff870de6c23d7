"""Directories that are replaced whole, never seen half-written, and never lost.

A new version is written into a temporary sibling `.NAME.<random>.tmp`, completed by its
`meta.json.sha256` (written last), then swapped in. On Linux the swap is one atomic
`renameat2(RENAME_EXCHANGE)`: NAME always holds a complete version. Elsewhere it is two
renames (NAME -> `.NAME.old-PID`, tmp -> NAME); a crash between them leaves no NAME, which
`recover` repairs on the next open or save by moving the newest complete copy back in place.
Debris of crashed writers (`.NAME.*.tmp`, `.NAME.old-*`) is removed when a later save or open
finds it and no writer holds the lock.

`lock(NAME)` is an exclusive advisory lock (`flock` on `.NAME.lock`) that a writer holds for as
long as it writes NAME; a second writer is refused with a message naming the holder."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from . import faults
from .errors import CheckpointError, Diagnostic, SpecError
from .locate import META

COMPLETE = "meta.json.sha256"  # the file a complete version ends with
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def make_temp_dir(target: Path) -> Path:
    """A new empty temporary sibling of `target`, with the permissions of a normal directory
    (mkdtemp's are 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def normal_permissions(folder: Path) -> None:
    """Files of a new version readable as a normal file is (some writers create them 0600)."""
    mode = 0o666 & ~_umask()
    for f in folder.iterdir():
        if f.is_file():
            os.chmod(f, mode)


def write_file(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new text, never a half; an
    existing file keeps its permissions, a new one gets a normal file's (umask applied). An
    unwritable place is a located error (a `SpecError` naming the file)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _unwritable(path, e) from None
        raise


def _unwritable(path: Path, e: OSError) -> SpecError:
    return SpecError(Diagnostic(f"cannot write {path}: {e.strerror or e}", str(path),
                                hint="write into an existing folder you may write to"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the complete directory `tmp` in place of `target` (which may not exist)."""
    if target.exists() and _exchange(tmp, target):
        faults.point("swapped")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        faults.point("swap")
        os.replace(tmp, target)
        faults.point("swapped")
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    if os.environ.get("ASSEMBLER_NO_EXCHANGE"):  # tests of the two-rename fallback
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    return rc == 0


def _debris(target: Path) -> list[Path]:
    parent = target.parent
    if not parent.is_dir():
        return []
    return [p for p in parent.glob(f".{target.name}.*") if p.is_dir() and
            (p.name.endswith(".tmp") or ".old-" in p.name)]


def _complete(d: Path) -> bool:
    return (d / COMPLETE).is_file()


def recover(target: Path) -> bool:
    """Repair what a crashed writer left: put back the newest complete copy when `target` is
    missing, remove the rest. Skipped while a writer holds the lock. True when it put one back."""
    debris = _debris(target)
    if not debris or _locked(target):
        return False
    restored = False
    if not target.exists():
        complete = sorted((d for d in debris if _complete(d)), key=_written, reverse=True)
        if complete:
            os.replace(complete[0], target)
            debris.remove(complete[0])
            restored = True
    for d in debris:
        shutil.rmtree(d, ignore_errors=True)
    return restored


def _written(d: Path) -> tuple:
    """When a complete copy was written: meta.json's time, then its completion file's mtime."""
    try:
        created = json.loads((d / META).read_text())["created"]
    except (OSError, ValueError, KeyError, TypeError):
        created = ""
    return (str(created), (d / COMPLETE).stat().st_mtime_ns)


# -- the writer's lock ------------------------------------------------------------------------------


def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def _locked(target: Path) -> bool:
    path = _lock_path(target)
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@contextmanager
def lock(target: Path, what: str = "write", wait: bool = False):
    """Hold the exclusive writer's lock of `target`. When another process holds it: refuse with
    a message naming it, or with `wait`, say so and wait for it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    f = open(_lock_path(target), "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            if not wait:
                raise CheckpointError(Diagnostic(f"{target} is being written by {holder}", str(target),
                                                 hint="wait for that run to end, or give another --out")) from None
            import sys
            print(f"waiting for {holder} to finish {target}", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} ({what}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
