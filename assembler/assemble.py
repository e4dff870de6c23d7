"""`assembler.compile`: a spec compiled to torch.fx (`compiler.compile`, which reads no files)
with its imported blocks' weights resolved (`checkpoint.attach_imports`)."""

from __future__ import annotations

from . import ir
from .checkpoint import attach_imports
from .compiler import Assembly
from .compiler import compile as compile_graphs
from .graph import Checked


def compile(spec: ir.Spec | Checked, *, seed: int = 0, imports: bool = True) -> Assembly:
    """Compile every network of a spec. Weights are initialised from `seed`; imported blocks
    take their checkpoint's weights (with `imports`; without, they keep random weights),
    `copy(...)` modules their source's."""
    asm = compile_graphs(spec, seed=seed)
    if imports:
        attach_imports(asm)
    return asm


__all__ = ["compile"]
