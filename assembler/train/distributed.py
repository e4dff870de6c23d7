"""DistributedDataParallel under torchrun: gloo on CPU, nccl on GPU. Rank 0 alone writes;
metrics are summed over ranks. Without torchrun every function here is a no-op."""

from __future__ import annotations

import os

import networkx as nx
import torch
import torch.distributed as td
from torch import nn


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized()


def init_from_env() -> bool:
    """Join the process group that torchrun describes in the environment, once."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    td.init_process_group(backend=backend)
    return True


def rank() -> int:
    return td.get_rank() if is_distributed() else 0


def world_size() -> int:
    return td.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        td.barrier()


def average_gradients(params) -> None:
    """Average the gradients of `params` over ranks (what DDP does, for graphs it does not wrap)."""
    if not is_distributed():
        return
    world = td.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        td.all_reduce(p.grad)
        p.grad /= world


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on some rank (e.g. a Ctrl-C)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    td.all_reduce(t)
    return bool(t.item() > 0)


def reduce_sums(partial: dict) -> dict:
    """Sum the numeric entries of an epoch's running totals over ranks."""
    if not is_distributed():
        return partial
    keys = ["loss", "correct", "seen", "steps", "seconds"] + sorted(partial["terms"])
    values = [float(partial[k]) for k in keys[:5]] + [float(partial["terms"][k]) for k in keys[5:]]
    t = torch.tensor(values, dtype=torch.float64)
    td.all_reduce(t)
    out = dict(zip(keys[:5], t[:5].tolist()))
    out["seconds"] = partial["seconds"]  # wall time, not a sum
    out["correct"], out["seen"], out["steps"] = int(out["correct"]), int(out["seen"]), int(out["steps"])
    out["terms"] = dict(zip(keys[5:], t[5:].tolist()))
    return out


def _unused_possible(checked, name: str) -> bool:
    """Whether some trainable module of a network may get no gradient in a step (it does not
    feed the outputs), which DDP must be told about."""
    net = checked.networks[name]
    g = net.digraph()
    needed = set(net.outputs)
    for o in net.outputs:
        needed |= nx.ancestors(g, o)
    return any(n.trainable and n.module and n.name not in needed for n in net.nodes)


def wrap(asm, networks) -> dict[str, nn.Module]:
    """DDP wrappers of the trained networks (frozen parameters are ignored by DDP)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    out = {}
    for name in networks:
        gm = asm.network(name)
        if not any(p.requires_grad for p in gm.parameters()):
            continue
        out[name] = DDP(gm, find_unused_parameters=_unused_possible(asm.checked, name))
    return out
