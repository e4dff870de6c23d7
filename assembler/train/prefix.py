"""The frozen prefix of a network: the nodes computed from its inputs by frozen, deterministic
ops only (no trainable parameter upstream, no dropout). Its outputs do not change during
training, so the trainer computes them once per data set and trains the rest (the suffix)
on them. A training step never pays for the prefix's backward in any case: nothing in it
requires a gradient."""

from __future__ import annotations

import torch
from torch import fx, nn

from ..compiler import build_graph
from ..graph import CheckedNetwork

RANDOM_OPS = frozenset({"dropout"})


def prefix_nodes(net: CheckedNetwork) -> set[str]:
    done = set(net.inputs)
    for n in net.nodes:
        if n.op == "input" or n.op in RANDOM_OPS or n.trainable:
            continue
        if all(i in done for i in n.inputs):
            done.add(n.name)
    return done


def split(net: CheckedNetwork) -> tuple[CheckedNetwork, CheckedNetwork, list[str]] | None:
    """(prefix network, suffix network, frontier) or None when there is no prefix worth caching."""
    inside = prefix_nodes(net)
    readers = {i for n in net.nodes if n.name not in inside for i in n.inputs}
    frontier = [n.name for n in net.nodes if n.name in inside and (n.name in readers or n.name in net.outputs)]
    if set(frontier) <= set(net.inputs):
        return None
    return net.cut(tuple(net.inputs), tuple(frontier)), net.cut(tuple(frontier), net.outputs), frontier


class Suffix(nn.Module):
    """Calls the suffix graph on a tuple of cached frontier tensors."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, features: tuple[torch.Tensor, ...]):
        return self.gm(*features)


class Features:
    """Cached frontier tensors of a data set, indexed like its samples."""

    def __init__(self, feats: tuple[torch.Tensor, ...], y: torch.Tensor):
        self.feats, self.y = feats, y

    def __len__(self) -> int:
        return len(self.y)

    @property
    def x(self) -> "Features":
        return self

    def __getitem__(self, idx) -> tuple[torch.Tensor, ...]:
        return tuple(f[idx] for f in self.feats)


def cached(asm, name: str, xs: list[torch.Tensor], device: torch.device | None = None, batch: int = 512):
    """(suffix module, one tuple of feature tensors per data set, on `device`) or None without a
    prefix."""
    parts = split(asm.checked.networks[name])
    if parts is None:
        return None
    prefix, suffix, frontier = parts
    device = device or torch.device("cpu")
    pre = build_graph(prefix, asm.modules).to(device)
    pre.eval()
    feats = []
    with torch.no_grad():
        for x in xs:
            chunks = [pre(x[i:i + batch].to(device)) for i in range(0, len(x), batch)]
            chunks = [c if isinstance(c, tuple) else (c,) for c in chunks]
            feats.append(tuple(torch.cat([c[k] for c in chunks]) for k in range(len(frontier))))
    return Suffix(build_graph(suffix, asm.modules).to(device)), feats
