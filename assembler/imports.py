"""Reading spec files and resolving `use` imports, safely.

A spec file is read only when it is a regular file within the size limit, and decoded as
UTF-8 with a located error where it is not. `use` resolves to `.net` spec files and to
checkpoint directories (their `spec.net`) only, after following symlinks, so a spec cannot
make `check` print the content of any other file; symlink loops are named as such.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from . import ir
from .errors import Diagnostic, SpecError, diagnostic
from .locate import META, SPEC, NotFound, locate
from .parser import parse
from .scope import Imported

CHECKPOINT_SPEC = SPEC  # what `use DIR` reads of a checkpoint directory
SPEC_SUFFIX = ".net"


def max_spec_bytes() -> int:
    """The largest spec file read (default 16 MiB; ASSEMBLER_MAX_SPEC_BYTES changes it)."""
    try:
        return int(os.environ.get("ASSEMBLER_MAX_SPEC_BYTES", 16 * 2**20))
    except ValueError:
        return 16 * 2**20


def read(path: str | os.PathLike) -> ir.Spec:
    """Read and parse a spec file, or the `spec.net` of a checkpoint directory."""
    p = Path(path)
    try:
        if p.is_dir():
            p = p / CHECKPOINT_SPEC
    except OSError:
        pass  # reported by reading it
    name = str(p) if p.is_absolute() else os.path.relpath(p)
    return parse(read_text(p, str(path)), name)


def read_text(p: Path, shown: str) -> str:
    """The text of spec file `p` (`shown` names it in errors): a regular file within the size
    limit (checked before reading), UTF-8; located errors otherwise."""
    limit = max_spec_bytes()
    try:
        info = os.stat(p)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(Diagnostic(f"{shown} is not a regular file", shown,
                                       hint="give a .net file or a checkpoint directory"))
        if info.st_size > limit:
            raise _too_big(shown, limit)
        with open(p, "rb") as f:
            data = f.read(limit + 1)  # files in /proc report no size
    except FileNotFoundError:
        if Path(shown).is_dir():
            raise SpecError(Diagnostic(f"{shown} is a directory without {CHECKPOINT_SPEC}", shown,
                                       hint="give a .net file or a checkpoint directory")) from None
        raise SpecError(Diagnostic(f"no such file: {shown}", shown, hint="check the path")) from None
    except OSError as e:
        raise SpecError(Diagnostic(_os_problem(shown, e), shown)) from None
    if len(data) > limit:
        raise _too_big(shown, limit)
    return decode(data, shown)


def _too_big(shown: str, limit: int) -> SpecError:
    return SpecError(Diagnostic(f"{shown} is larger than {limit:,} bytes, the limit for a spec file", shown,
                                hint="raise the limit with the environment variable ASSEMBLER_MAX_SPEC_BYTES"))


def _os_problem(shown: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return f"cannot read {shown}: a symlink loop (a link that leads back to itself)"
    if e.errno == errno.EISDIR:
        return f"{shown} is a directory"
    return f"cannot read {shown}: {e.strerror or e}"


def decode(data: bytes, filename: str) -> str:
    """UTF-8 text; invalid bytes are a located error (the line shown with them replaced)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        start = before.rfind(b"\n") + 1
        column = len(before[start:].decode("utf-8", errors="replace")) + 1
        text = data.decode("utf-8", errors="replace")
        raise SpecError(Diagnostic(f"the file is not valid UTF-8 text: byte 0x{data[e.start]:02x} cannot start or "
                                   "continue a character", filename, line, column, 1,
                                   "save the file as UTF-8", text)) from None


# ---------------------------------------------------------------------------------------------
# `use`


class Refused(Exception):
    """An import that cannot be used; carries its diagnostics."""

    def __init__(self, *diags: Diagnostic):
        super().__init__(*(d.message for d in diags))
        self.diags = list(diags)


def base_dir(spec: ir.Spec) -> Path:
    name = spec.filename
    return Path(name).parent if name and not name.startswith("<") else Path.cwd()


def self_path(spec: ir.Spec) -> str | None:
    name = spec.filename
    return str(Path(name).resolve()) if name and not name.startswith("<") else None


def in_checkpoint(spec: ir.Spec) -> bool:
    """Whether a spec is a checkpoint's own `spec.net` (its imports are content ids only)."""
    p = Path(spec.filename)
    return p.name == CHECKPOINT_SPEC and (p.parent / META).is_file()


def target_of(spec: ir.Spec, use: ir.Use) -> tuple[Path, Path]:
    """The spec file a `use` names, as written (relative to the importing file, for messages)
    and resolved (symlinks followed); raises `Refused`."""
    hint = "paths in 'use' are relative to the importing file"
    try:
        path = locate(use.path, base_dir(spec), in_checkpoint=in_checkpoint(spec))
        if path.is_dir():
            target = path / CHECKPOINT_SPEC
            if not target.is_file():
                raise Refused(diagnostic(f"checkpoint directory '{use.path}' has no spec.net (looked at "
                                         f"{target.resolve()})", use.span, hint=hint))
        elif not path.exists() and not path.is_symlink():
            raise Refused(diagnostic(f"cannot find '{use.path}' (looked at {path.resolve()})", use.span, hint=hint))
        else:
            target = path
        resolved = target.resolve(strict=True)
    except (RuntimeError, OSError) as e:  # RuntimeError: a symlink loop, before Python 3.13
        if isinstance(e, RuntimeError) or getattr(e, "errno", None) == errno.ELOOP:
            raise Refused(diagnostic(f"cannot use '{use.path}': a symlink loop (a link that leads back to itself)",
                                     use.span, hint="point the link at a .net file or a checkpoint directory"))
        if isinstance(e, FileNotFoundError):
            raise Refused(diagnostic(f"cannot find '{use.path}' (looked at {path.resolve()})", use.span,
                                     hint=hint)) from None
        raise Refused(diagnostic(f"cannot use the path {use.path!r}: {e}", use.span,
                                 hint="give the path of a .net file or a checkpoint directory")) from None
    except ValueError as e:
        raise Refused(diagnostic(f"cannot use the path {use.path!r}: {e}", use.span,
                                 hint="give the path of a .net file or a checkpoint directory")) from None
    except NotFound as e:
        raise Refused(diagnostic(f"cannot find the import '{use.alias}': {e}", use.span,
                                 hint="copy the checkpoint with its imports (assembler bundle), or add the folder "
                                 "holding them to ASSEMBLER_PATH")) from None
    if resolved.suffix != SPEC_SUFFIX or target.suffix != SPEC_SUFFIX or not resolved.is_file():
        what = "a directory" if resolved.is_dir() else "not a .net spec file"
        raise Refused(diagnostic(f"cannot use '{use.path}': it is {what}", use.span,
                                 hint="'use' imports .net spec files and checkpoint directories only"))
    return target, resolved


def imported(alias: str, path: str, checked) -> Imported:
    nets = checked.networks
    return Imported(alias=alias, path=path, networks=nets, modules=checked.modules,
                    single=next(iter(nets)) if len(nets) == 1 else None, checked=checked)
