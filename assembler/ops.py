"""The op table: every op and merge the language knows, as one torch-free entry each
(the entries' types are in `optypes.py`, the built-in entries in `builtin_ops.py`).

An entry says what the front end and the tools need: the arguments, the output shape, the
parameter and FLOP counts, the text a picture shows (`label`) and how the spec generator of
`assembler.testing` draws valid arguments (`sample`). The torch side attaches a lowering to
the same name (`assembler.lowerings.register_lowering`); nothing here imports torch.

Installed packages add entries through the `assembler.ops` entry-point group or
`register_op`; a spec never names Python code. Shapes leave out the batch dimension; FLOPs
are multiply-accumulates per sample of the forward pass (the unit of the papers' tables).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from . import builtin_ops
from .optypes import Arg, Chooser, Merge, Op, OpError, Shape  # noqa: F401 - importable from here as always

OPS: dict[str, Op] = {}
MERGES: dict[str, Merge] = {}
#: Names with a fixed meaning in a chain besides ops and merges.
SPECIAL = frozenset({"copy"})


def register_op(op: Op) -> Op:
    """Add an op or a merge to the table (a package's entry point in group `assembler.ops`
    calls this). A name can be registered once."""
    table = MERGES if isinstance(op, Merge) else OPS
    if (op.name in OPS or op.name in MERGES) and table.get(op.name) is not op:
        raise ValueError(f"op '{op.name}' is already registered")
    if op.name in SPECIAL:
        raise ValueError(f"'{op.name}' is reserved by the language")
    table[op.name] = op
    return op


def unregister_op(name: str) -> None:
    """Remove an op or merge (for tests that register a toy one)."""
    OPS.pop(name, None)
    MERGES.pop(name, None)


_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in entry_points(group="assembler.ops"):
            loaded = ep.load()
            for op in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
                if isinstance(op, Op) and op.name not in OPS and op.name not in MERGES:
                    register_op(op)


def ops() -> dict[str, Op]:
    """The ops (merges aside), with installed packages' ops loaded on first use."""
    _load_plugins()
    return OPS


def merges() -> dict[str, Merge]:
    """The merges: `add`, `mul`, `cat`, `gate` and installed ones."""
    _load_plugins()
    return MERGES


def entry(name: str) -> Op | None:
    """The op or merge of that name, or None."""
    _load_plugins()
    return OPS.get(name) or MERGES.get(name)


def builtin_names() -> frozenset[str]:
    """Names a user may not take for a template, shared module or network."""
    return frozenset(ops()) | frozenset(merges()) | SPECIAL


for _entry in builtin_ops.OPS + builtin_ops.MERGES:
    register_op(_entry)
