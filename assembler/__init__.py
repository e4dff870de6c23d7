"""assembler: a declarative graph-assembly language and compiler for transfer learning.

The front end (`load`, `parse`, `check`, `format`, `expand`, `edits`) never imports torch;
the names that need it (`compile`, `Assembly`, `restore`, `save`, `from_torch`) are imported on
first use,
so `import assembler` and checking a spec start instantly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import edits
from .errors import CheckError, CheckpointError, DataError, Diagnostic, ParseError, SpecError
from .graph import Checked
from .ir import Spec
from .parser import parse
from .printer import format_spec as format
from .resolve import check, expand, load

if TYPE_CHECKING:
    from .assemble import compile
    from .checkpoint import restore, save
    from .compiler import Assembly
    from .interop import from_torch

__version__ = "0.1.0"

__all__ = [
    "Assembly", "CheckError", "Checked", "CheckpointError", "DataError", "Diagnostic", "ParseError", "Spec", "SpecError",
    "check", "compile", "edits", "expand", "format", "from_torch", "load", "parse", "restore", "save",
]

_LAZY = {"Assembly": "compiler", "compile": "assemble", "restore": "checkpoint", "save": "checkpoint",
         "from_torch": "interop"}


def __getattr__(name: str):
    """The torch-backed names, imported when first used."""
    if name in _LAZY:
        from importlib import import_module
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
