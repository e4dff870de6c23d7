"""Teachers named in procedure settings: a network of the same spec, or an imported one."""

from __future__ import annotations

from torch import nn

from ..errors import SpecError, Diagnostic


def teacher_network(ctx, name: str) -> nn.Module:
    """The teacher as a module: a same-file network of the Assembly, or an imported network
    compiled from its checkpoint (`alias` or `alias.network`), frozen."""
    asm = ctx.asm
    if name in asm.checked.networks:
        return asm.network(name)
    alias, _, net = name.partition(".")
    if alias not in asm.checked.imports:
        raise SpecError(Diagnostic(f"no teacher network '{name}'", asm.checked.filename))
    from ..checkpoint import checkpoint_dir_of, restore, trained_checkpoint
    from pathlib import Path
    from ..compiler import compile as compile_spec
    from ..resolve import load
    path = Path(asm.checked.imports[alias])
    ckpt = checkpoint_dir_of(str(path)) or trained_checkpoint(path)
    other = restore(ckpt) if ckpt else compile_spec(load(path))
    if not net:
        net = other.names[0]
    gm = other.network(net)
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm
