"""assembler: a declarative graph-assembly language and compiler for transfer learning."""

from __future__ import annotations

from . import edits
from .errors import CheckError, CheckpointError, DataError, Diagnostic, ParseError, SpecError
from .graph import Checked
from .ir import Spec
from .parser import parse
from .printer import format_spec as format
from .resolve import check, expand, load
from .compiler import Assembly
from .assemble import compile
from .checkpoint import restore, save
from .interop import from_torch

__version__ = "0.1.0"

__all__ = [
    "Assembly", "CheckError", "Checked", "CheckpointError", "DataError", "Diagnostic", "ParseError", "Spec", "SpecError",
    "check", "compile", "edits", "expand", "format", "from_torch", "load", "parse", "restore", "save",
]
