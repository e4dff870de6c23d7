"""The torch side of the op table: a module or a function for every op, the gate, the proxy,
and frozen batch-norm. The compiler calls `build(module_decl)` and `function(node)`."""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .graph import GraphNode, Module


class Gate(nn.Module):
    """NetTailor's complexity-aware pooling: sum_i alpha_i * path_i, alpha = softmax(logits)."""

    def __init__(self, paths: int, init: list[float]):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(init, dtype=torch.float32))
        self.paths = paths

    def alphas(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, *paths: torch.Tensor) -> torch.Tensor:
        a = self.alphas()
        out = paths[0] * a[0]
        for i in range(1, len(paths)):
            out = out + paths[i] * a[i]
        return out


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


def _batchnorm(s, a):
    return nn.BatchNorm2d(s[0]) if len(s) == 3 else nn.BatchNorm1d(s[0])


BUILDERS: dict[str, Callable[[tuple, dict], nn.Module]] = {
    "conv": lambda s, a: nn.Conv2d(s[0], a["out"], a["k"], a["stride"], a["pad"], groups=a["groups"], bias=a["bias"]),
    "linear": lambda s, a: nn.Linear(s[-1], a["out"], bias=a["bias"]),
    "batchnorm": _batchnorm,
    "layernorm": lambda s, a: nn.LayerNorm(s[-1]),
    "dropout": lambda s, a: nn.Dropout(a["p"]),
    "proxy": lambda s, a: Proxy(s[0], a["c"], a["stride"]),
    "gate": lambda s, a: Gate(len(a["init"]), a["init"]),
}


def register_builder(op: str, build: Callable[[tuple, dict], nn.Module]) -> None:
    """Give an op registered through `assembler.ops.register_op` its module constructor."""
    BUILDERS[op] = build


def build(decl: Module) -> nn.Module:
    if decl.op not in BUILDERS:
        raise KeyError(f"op '{decl.op}' has no module constructor; register one with register_builder")
    m = BUILDERS[decl.op](decl.in_shape, decl.args)
    return m if decl.trainable else freeze(m)


def gap(x: torch.Tensor) -> torch.Tensor:
    """Global average pool over H and W, flattened to [N, C]."""
    return x.mean(dim=(-2, -1))


def add(*xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def mul(*xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def function(node: GraphNode) -> tuple[Any, tuple, dict]:
    """(callable, extra args, kwargs) for an op without a module; inputs come first."""
    a = node.args
    op = node.op
    if op == "relu":
        return torch.relu, (), {}
    if op == "gelu":
        return F.gelu, (), {}
    if op == "sigmoid":
        return torch.sigmoid, (), {}
    if op == "tanh":
        return torch.tanh, (), {}
    if op == "softmax":
        return torch.softmax, (), {"dim": a["dim"] + 1 if a["dim"] >= 0 else a["dim"]}
    if op == "maxpool":
        return F.max_pool2d, (a["k"], a["stride"] or a["k"], a["pad"]), {}
    if op == "avgpool":
        return F.avg_pool2d, (a["k"], a["stride"] or a["k"], a["pad"]), {}
    if op == "gap":
        return gap, (), {}
    if op == "flatten":
        return torch.flatten, (1,), {}
    if op == "upsample":
        return F.interpolate, (), {"scale_factor": float(a["scale"]), "mode": a["mode"]}
    if op == "add":
        return (operator.add if len(node.inputs) == 2 else add), (), {}
    if op == "mul":
        return (operator.mul if len(node.inputs) == 2 else mul), (), {}
    raise KeyError(f"op '{op}' has no function")
