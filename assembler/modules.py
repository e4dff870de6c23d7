"""The modules of the language that torch lacks: NetTailor's gate and proxy, and frozen
batch-norm (with `freeze`/`unfreeze`). `lowerings.py` maps op names to them."""

from __future__ import annotations


import torch
from torch import nn


class Gate(nn.Module):
    """NetTailor's complexity-aware pooling: sum_i alpha_i * path_i, alpha = softmax(logits);
    with mix="relu", relu of that sum (the reference code's mixing)."""

    def __init__(self, paths: int, init: list[float], mix: str = "sum"):
        super().__init__()
        if mix not in ("sum", "relu"):
            raise ValueError(f"gate mix must be 'sum' or 'relu', got {mix!r}")
        self.logits = nn.Parameter(torch.tensor(init, dtype=torch.float32))
        self.paths = paths
        self.mix = mix

    def alphas(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, *paths: torch.Tensor) -> torch.Tensor:
        a = self.alphas()
        out = paths[0] * a[0]
        for i in range(1, len(paths)):
            out = out + paths[i] * a[i]
        return torch.relu(out) if self.mix == "relu" else out

    def extra_repr(self) -> str:
        return f"paths={self.paths}, mix={self.mix!r}"


class Proxy(nn.Module):
    """NetTailor's lean proxy: max-pool (kernel stride+1, padding stride//2) when stride > 1,
    then a bias-free 1x1 conv and batch-norm, as in the reference code (no ReLU)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.pool = nn.MaxPool2d(stride + 1, stride, stride // 2) if stride > 1 else None
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        nn.init.normal_(self.conv.weight, 0.0, 0.01)  # the reference code's init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return self.bn(self.conv(x))


class FrozenBatchNorm1d(nn.BatchNorm1d):
    """Batch-norm of a frozen block: always normalises with its running statistics and never
    updates them, whatever the network's mode."""

    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    __doc__ = FrozenBatchNorm1d.__doc__

    def train(self, mode: bool = True):
        return super().train(False)


_FROZEN_BN = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d}


def freeze(module: nn.Module) -> nn.Module:
    """Make a module frozen in place: no gradients, batch-norm fixed in eval mode."""
    for m in module.modules():
        if type(m) in _FROZEN_BN:
            m.__class__ = _FROZEN_BN[type(m)]
            m.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    back = {v: k for k, v in _FROZEN_BN.items()}
    for m in module.modules():
        if type(m) in back:
            m.__class__ = back[type(m)]
    for p in module.parameters():
        p.requires_grad_(True)
    return module
