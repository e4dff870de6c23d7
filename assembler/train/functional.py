"""Differentiable inner steps for bilevel procedures (L2T-ww): run a network with substituted
parameters and take SGD steps as functions of what produced the loss, so that a procedure can
differentiate through T look-ahead steps to its meta-parameters, without touching the real
parameters, batch-norm buffers or momentum.

    params = detached(named)                       # start from the real weights
    momenta = momentum_buffers(optimizer, named)   # and the real momentum
    for _ in range(T):
        loss = inner_loss(call(gm, params, x, buffers=buffers))
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params, momenta = sgd_step(params, grads, momenta, lr=..., momentum=..., weight_decay=...)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def call(module: nn.Module, params: dict[str, torch.Tensor], *args, buffers: dict[str, torch.Tensor] | None = None):
    """`module(*args)` with its parameters (and buffers) replaced by the given tensors, by name
    (`module.named_parameters()` names). Pass copies of buffers to keep batch-norm's running
    statistics of the real module as they are."""
    return torch.func.functional_call(module, {**params, **(buffers or {})}, args, strict=False)


def detached(named: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """Fresh leaves with the parameters' values that require gradients: the start of a look-ahead."""
    return {k: p.detach().clone().requires_grad_(True) for k, p in named.items()}


def buffer_copies(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of a module's buffers, for a look-ahead that must not move the real ones."""
    return {k: b.clone() for k, b in module.named_buffers()}


def momentum_buffers(optimizer: torch.optim.Optimizer, named: dict[str, nn.Parameter]) -> dict[str, torch.Tensor | None]:
    """The SGD momentum buffer of each named parameter (None before its first step), detached."""
    out = {}
    for k, p in named.items():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        out[k] = None if buf is None else buf.detach().clone()
    return out


def sgd_hyper(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict[str, Any]:
    """The current lr, momentum, dampening, weight decay and nesterov of the group holding `param`."""
    for g in optimizer.param_groups:
        if any(q is param for q in g["params"]):
            return {"lr": g["lr"], "momentum": g.get("momentum", 0.0), "dampening": g.get("dampening", 0.0),
                    "weight_decay": g.get("weight_decay", 0.0), "nesterov": g.get("nesterov", False)}
    raise KeyError("the parameter is in no group of this optimizer")


def sgd_step(params: dict[str, torch.Tensor], grads, momenta: dict[str, torch.Tensor | None], *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
             nesterov: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """One step of torch.optim.SGD written as a function: (new params, new momentum buffers).
    Differentiable through `grads` (made with create_graph=True) and the incoming params and
    buffers; the same arithmetic as torch's SGD, so a real step and this step agree."""
    new_p, new_m = {}, {}
    for (k, p), g in zip(params.items(), grads):
        if g is None:
            new_p[k], new_m[k] = p, momenta.get(k)
            continue
        d = g + weight_decay * p if weight_decay else g
        if momentum:
            buf = momenta.get(k)
            buf = d if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
            new_m[k] = buf
        else:
            new_m[k] = None
        new_p[k] = p - lr * d
    return new_p, new_m
