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


def init_from_env(device: torch.device | None = None) -> bool:
    """Join the process group that torchrun describes in the environment, once: nccl when
    training on GPUs (each rank on its local one), gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
        td.init_process_group(backend="nccl")
    else:
        td.init_process_group(backend="gloo")
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
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    td.all_reduce(t)
    return bool(t.item() > 0)


def _comm_device() -> torch.device:
    """Where collective tensors live: nccl needs them on the rank's GPU."""
    return torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")


def reduce_sums(partial: dict) -> dict:
    """Sum the numbers of an epoch's running totals (nested dicts) over ranks; wall time stays
    this rank's. Every rank holds the same keys: each saw the same networks and terms."""
    if not is_distributed():
        return partial
    paths = sorted(_leaves(partial))
    t = torch.tensor([float(_get(partial, p)) for p in paths], dtype=torch.float64, device=_comm_device())
    td.all_reduce(t)
    out = _copy(partial)
    for path, v in zip(paths, t.tolist()):
        _set(out, path, int(v) if isinstance(_get(partial, path), int) else v)
    return out


def _leaves(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _leaves(v, prefix + (k,))
        elif isinstance(v, (int, float)) and prefix + (k,) != ("seconds",):
            out.append(prefix + (k,))
    return out


def _get(d: dict, path: tuple):
    for k in path:
        d = d[k]
    return d


def _set(d: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _copy(d: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in d.items()}


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
