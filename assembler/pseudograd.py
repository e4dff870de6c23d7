"""The pseudo-gradient graph of back-distillation (network transplanting, paper 000, Eq. 4b).

`asm.network(name, ..., variant="pseudo_gradient")` is the network with the same forward pass
in which
  - ReLU passes gradients unchanged (the paper's f'_dummy), and
  - max-pooling routes them as average pooling with the same window would (f'_avgpool): each
    input position of a k x k window gets 1/k^2 of the window's gradient (count_include_pad:
    padded positions count, as in the average pooling of the same arguments).

Both are `torch.autograd.Function`s whose backward is made of differentiable torch ops, so a
gradient taken with `create_graph=True` can itself be differentiated (back-back-propagation:
the matching loss reaches the adapter's parameters). Everything else keeps its ordinary
gradient; batch-norm of frozen blocks is in eval mode (`FrozenBatchNorm`), an affine map.

Why: with these two replacements the backward pass of a network made of convolutions, linear
layers, eval-mode batch-norm, ReLU, max/average pooling, flattening and sums no longer reads any
feature map, so the pseudo-gradient D' = d(r^T y)/dx is a fixed linear function of r: it does
not depend on x. `x_independent(gm)` says whether a graph is of that kind.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .lowerings import add, gap
from .variants import copy_graph, register_variant


class PseudoReLU(torch.autograd.Function):
    """relu forward; the identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad  # the identity is trivially differentiable: double backward passes through


class MaxAsAvgPool(torch.autograd.Function):
    """2-d max-pooling forward; the backward of average pooling with the same window."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple, stride: tuple, padding: tuple, ceil_mode: bool):
        ctx.window = (kernel, stride, padding, ceil_mode)
        ctx.in_shape = x.shape
        return F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kernel, stride, padding, ceil_mode = ctx.window
        # aten's avg_pool2d_backward reads only the shape of its `self`; its own derivative in
        # grad is average pooling, so this backward can be differentiated again.
        shape_only = grad.new_empty(ctx.in_shape)
        out = torch.ops.aten.avg_pool2d_backward(grad, shape_only, kernel, stride, padding, ceil_mode, True, None)
        return out, None, None, None, None


def pseudo_relu(x: torch.Tensor) -> torch.Tensor:
    """relu whose backward is the identity."""
    return PseudoReLU.apply(x)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def max_as_avg_pool(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                    return_indices=False) -> torch.Tensor:
    """`F.max_pool2d` (same signature) whose backward routes gradients as average pooling."""
    if _pair(dilation) != (1, 1) or return_indices:
        raise ValueError("the pseudo-gradient of max-pooling is defined without dilation and indices")
    kernel = _pair(kernel_size)
    stride = kernel if stride is None or stride == [] else _pair(stride)
    return MaxAsAvgPool.apply(x, kernel, stride, _pair(padding), bool(ceil_mode))


_RELUS = {torch.relu, F.relu, torch.nn.functional.relu}
_MAXPOOLS = {F.max_pool2d}

# Ops whose (pseudo-)backward reads no feature map: a graph of these gives D' independent of x.
_LINEAR_FUNCTIONS = {pseudo_relu, max_as_avg_pool, F.avg_pool2d, torch.flatten, torch.cat, operator.add,
                     operator.getitem, F.interpolate}  # interpolation is linear in x in every mode
_LINEAR_MODULES = (nn.Conv2d, nn.Linear, nn.Identity, nn.Flatten, nn.AvgPool2d)


@register_variant("pseudo_gradient")
def pseudo_gradient(gm: fx.GraphModule) -> fx.GraphModule:
    """The graph with ReLU and max-pooling replaced by their pseudo-gradient versions (call
    nodes of torch.relu / F.relu / F.max_pool2d, and nn.ReLU / nn.MaxPool2d submodules)."""
    out = copy_graph(gm, f"{type(gm).__name__}_pseudo_gradient")
    for node in out.graph.nodes:
        if node.op == "call_function" and node.target in _RELUS:
            node.target, node.kwargs = pseudo_relu, {}
        elif node.op == "call_function" and node.target in _MAXPOOLS:
            node.target = max_as_avg_pool
        elif node.op == "call_module":
            module = out.get_submodule(node.target)
            if isinstance(module, nn.ReLU):
                node.op, node.target = "call_function", pseudo_relu
            elif isinstance(module, nn.MaxPool2d):
                node.op, node.target = "call_function", max_as_avg_pool
                node.kwargs = {"kernel_size": module.kernel_size, "stride": module.stride,
                               "padding": module.padding, "dilation": module.dilation,
                               "ceil_mode": module.ceil_mode}
    out.recompile()
    return out


def x_independent(gm: fx.GraphModule) -> bool:
    """Whether the backward pass of `gm` reads no feature map, so d(r^T y)/dx is the same linear
    map of r for every x: every node is a convolution, a linear layer, eval-mode batch-norm, a
    pseudo-gradient ReLU or max-pooling, average pooling (also `gap`), flattening, a sum or a
    concatenation. Train-mode batch-norm, sigmoid, tanh, softmax, products and the like are not."""
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_function":
            if node.target in _LINEAR_FUNCTIONS or node.target in (gap, add):
                continue
            return False
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, _LINEAR_MODULES) or isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training:
                continue
            return False
        return False
    return True


def pseudo_jacobian(gm: fx.GraphModule, in_shape: tuple[int, ...], out_shape: tuple[int, ...], *,
                    device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The matrix M [outputs, *in_shape] with d(r^T y)/dx = r @ M for every x, of a graph for which
    `x_independent` holds (its first output, one input): one backward pass per output unit,
    batched, at x = 0 (any x gives the same)."""
    units = math.prod(out_shape)
    x = torch.zeros((units, *in_shape), device=device, dtype=dtype, requires_grad=True)
    eye = torch.eye(units, device=device, dtype=dtype).view(units, *out_shape)
    with torch.enable_grad():
        y = gm(x)
        y = y[0] if isinstance(y, tuple) else y
        m, = torch.autograd.grad(y, x, eye)
    return m


__all__ = ["MaxAsAvgPool", "PseudoReLU", "max_as_avg_pool", "pseudo_gradient", "pseudo_jacobian", "pseudo_relu",
           "x_independent"]
