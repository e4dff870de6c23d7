"""`l2tww`: learning what and where to transfer (Jang et al., ICML 2019; paper 003).

The trained network T learns its task with `match [S...] * [T...] : meta` edges from a frozen
source S: per pair, w = softmax(f(gap S_m)) weighs the source's channels (what) and
lambda = relu6(g(gap S_m)) the pair (where); `assembler.matching.MetaEdge` holds f, g (the
meta-parameters phi) and the 1x1 regressor r (trained with T). Per minibatch (Algorithm 1):

  1. a real SGD step of T and the regressors on CE + beta * L_wfm (the section's optimizer);
  2. from those weights theta_0, T_inner = `inner_steps` look-ahead steps on beta * L_wfm alone and
     one on CE, each an SGD step with the real momentum, weight decay and current learning rate,
     written as functions (`assembler.train.functional`) so that theta_{T+1} is a function of phi;
  3. d CE(theta_{T+1}) / d phi by reverse-mode autograd through the unrolled steps, and one Adam
     step on phi (`meta_lr`, `meta_wd`, no schedule) -- the optimizer named "meta";
  4. the look-ahead is discarded: the real parameters, batch-norm buffers and momentum are those
     step 1 left (the look-ahead runs on copies; nothing real is written after step 1).

The reference code (alinlab/L2T-ww, `MetaSGD.meta_backward`) gets the same hypergradient by
replaying saved state dicts with double backprop (Reverse-HG); keeping the graph of the
look-ahead instead needs no state copies and no second forward per step
(`benchmarks/l2tww_speed.py`). As in the reference, where a loss does not reach a parameter
(the classifier under L_wfm, the regressors under CE) its gradient counts as zero, so momentum
and weight decay still move it in the look-ahead.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Diagnostic, place
from . import functional as fn
from .distributed import average_gradients
from .matching import EdgeFeatures, endpoint
from .procedure import Batch, Optim, Outcome, Procedure, Step, first_output

Params = dict[str, torch.Tensor]
Groups = list[tuple[list[str], dict]]  # (parameter names, SGD hyper-parameters) per optimizer group


def sgd_groups(optimizer: torch.optim.Optimizer, named: dict[str, nn.Parameter]) -> Groups:
    """The names of `named` in each of the optimizer's groups, with the group's SGD settings now."""
    key_of = {id(p): k for k, p in named.items()}
    return [([key_of[id(p)] for p in g["params"] if id(p) in key_of], fn.sgd_hyper(optimizer, g["params"][0]))
            for g in optimizer.param_groups if g["params"]]


def _step(params: Params, grads: Params, momenta: dict, groups: Groups) -> tuple[Params, dict]:
    """One functional SGD step, each group with its own settings."""
    new_p, new_m = {}, {}
    for keys, hyper in groups:
        p, m = fn.sgd_step({k: params[k] for k in keys}, [grads[k] for k in keys],
                           {k: momenta.get(k) for k in keys}, **hyper)
        new_p.update(p)
        new_m.update(m)
    return new_p, new_m


def hypergradient(params: Params, momenta: dict, groups: Groups, inner: Callable[[Params], torch.Tensor],
                  outer: Callable[[Params], torch.Tensor], meta: list[torch.Tensor],
                  steps: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(d outer(theta_{T+1}) / d meta, outer(theta_{T+1})) where theta_0 = `params` (leaves that
    require grad), theta_{t+1} = SGD(theta_t, grad inner(theta_t)) for t < T = `steps` and
    theta_{T+1} = SGD(theta_T, grad outer(theta_T)), SGD with the momentum buffers `momenta`
    and the settings of `groups`. `inner` depends on `meta`; gradients that do not reach a
    parameter count as zero."""
    keys = list(params)
    for t in range(steps + 1):
        loss = (inner if t < steps else outer)(params)
        got = torch.autograd.grad(loss, [params[k] for k in keys], create_graph=True, allow_unused=True)
        grads = {k: torch.zeros_like(params[k]) if g is None else g for k, g in zip(keys, got)}
        params, momenta = _step(params, grads, momenta, groups)
    final = outer(params)
    got = torch.autograd.grad(final, meta, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(meta, got)], final.detach()


class Functional:
    """The trained network and the matching edges into it as functions of a dict of parameters
    named as `asm.named_parameters(network, edges=True)` names them."""

    def __init__(self, asm, network: str, features: EdgeFeatures):
        self.features = features
        self.gm = asm.network(network, features.targets)
        self.edges = [(i, asm.edges[i]) for i, _ in features.edges]
        self.named = asm.named_parameters(network, edges=True)
        owner = {id(p): (None, k) for k, p in self.gm.named_parameters()}
        for i, edge in self.edges:
            owner.update({id(p): (i, k) for k, p in edge.named_parameters()})
        self.owner = {name: owner[id(p)] for name, p in self.named.items()}

    def split(self, params: Params) -> tuple[Params, dict[int, Params]]:
        """The network's parameters and each edge's, by their modules' own names."""
        net, edges = {}, {i: {} for i, _ in self.edges}
        for name, value in params.items():
            i, local = self.owner[name]
            (net if i is None else edges[i])[local] = value
        return net, edges

    def forward(self, params: Params, x: torch.Tensor, buffers: Params) -> tuple[torch.Tensor, dict]:
        """(logits, tapped target features) with these parameters and buffer copies."""
        out, acts = fn.call(self.gm, self.split(params)[0], x, buffers=buffers)
        return first_output(out), acts

    def matching(self, params: Params | None, sources: dict, acts: dict) -> torch.Tensor:
        """The sum over edges of each edge's batch-mean loss (L_wfm without beta); the edges'
        own parameters when `params` is None."""
        edge_params = self.split(params)[1] if params is not None else None
        total = 0.0
        for i, s, t in self.features.pairs(sources, acts):
            edge = self.features.asm.edges[i]
            total = total + (edge(s, t) if edge_params is None else fn.call(edge, edge_params[i], s, t)).mean()
        return total


class L2TWW(Procedure):
    name = "l2tww"
    ddp = False  # the network runs with taps and substituted parameters; gradients averaged by hand
    uses_edges = True  # the regressors train with the network

    def _network(self) -> str:
        return self.networks()[0]

    def setup(self) -> None:
        net = self._network()
        self.features = EdgeFeatures(self.ctx.asm, net)
        if not self.ctx.asm.meta_parameters(net):
            raise self._error(f"l2tww needs 'match ... : meta' edges into '{net}'; the spec has none",
                              "procedure", f"add e.g. match [src.c2, src.c3] * [{net}.b1, {net}.b2] : meta")
        self.fun = Functional(self.ctx.asm, net, self.features)

    def optimizers(self, stage):
        net = self.ctx.asm
        meta = {"name": "adam", "args": {"lr": self.ctx.args["meta_lr"], "weight_decay": self.ctx.args["meta_wd"]}}
        return {"model": Optim([{"params": self.parameters(stage)}]),
                "meta": Optim([{"params": list(net.meta_parameters(self._network()).values())}], optimizer=meta,
                              schedule={"name": "constant", "args": {}})}

    def step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> Step:
        x, y = batch[0]
        model, meta = optimizers["model"], optimizers["meta"]
        if not isinstance(model, torch.optim.SGD):
            raise self._error("l2tww's look-ahead steps are SGD steps: the section's optimizer must be sgd",
                              "optimizer", "optimizer = sgd(lr=0.1, momentum=0.9, weight_decay=0.0001)")
        beta = self.ctx.args["beta"]
        sources = self.features.source_features(x)
        # 1. the real step on CE + beta * L_wfm
        for opt in (model, meta):
            opt.zero_grad(set_to_none=True)
        out, acts = self.fun.gm(x)
        logits = first_output(out)
        ce = F.cross_entropy(logits, y)
        match = self.fun.matching(None, sources, acts)
        loss = ce + beta * match
        if not torch.isfinite(loss):
            return Step(loss.detach(), {}, {self._network(): logits})
        loss.backward()
        self.after_backward({"model": model})
        model.step()
        # 2-3. the look-ahead from the new weights, differentiated to phi; one Adam step
        outer = self.meta_step(x, y, sources, model, meta)
        return Step(loss.detach(), {"ce": ce.item(), "matching": match.item(), "meta_ce": outer.item()},
                    {self._network(): logits})

    def meta_step(self, x, y, sources, model, meta) -> torch.Tensor:
        """Steps 2-4: the hypergradient of the look-ahead's CE, applied by the "meta" optimizer;
        the real weights, buffers and momentum are only read. Returns the look-ahead's CE."""
        named, beta = self.fun.named, self.ctx.args["beta"]
        buffers = fn.buffer_copies(self.fun.gm)

        def inner(params):
            return beta * self.fun.matching(params, sources, self.fun.forward(params, x, buffers)[1])

        def outer(params):
            return F.cross_entropy(self.fun.forward(params, x, buffers)[0], y)

        phi = [p for g in meta.param_groups for p in g["params"]]
        grads, final = hypergradient(fn.detached(named), fn.momentum_buffers(model, named), sgd_groups(model, named),
                                     inner, outer, phi, self.ctx.args["inner_steps"])
        for p, g in zip(phi, grads):
            p.grad = g
        average_gradients(phi)  # under torchrun: the mean over ranks' batches
        meta.step()
        return final

    def finish(self) -> Outcome:
        lams, sds = edge_lambdas(self.ctx.asm, self._network(), self.ctx.data_for(self._network()).x,
                                 self.ctx.settings["batch"] * 4)
        return Outcome(self.ctx.asm, {"edge_lambdas": lams, "edge_lambda_sds": sds})

    def _error(self, message: str, key: str, hint: str):
        from .trainer import TrainError
        section = next((t for t in self.ctx.asm.checked.trains if tuple(t.networks) == tuple(self.ctx.networks)), None)
        span = section and (section.spans.get(key) or section.span)
        return TrainError(Diagnostic(message, *place(span, self.ctx.asm.checked.filename), hint=hint))


def edge_lambdas(asm, network: str, x: torch.Tensor, batch: int = 256) -> tuple[list, list]:
    """Mean and standard deviation over the samples `x` of each `meta` edge's lambda into
    `network` (1 where `where=false`), aligned with `asm.checked.edges`; None for other edges.
    The paper's Fig. 3d and 4."""
    features = EdgeFeatures(asm, network)
    values: dict[int, list[torch.Tensor]] = {i: [] for i, _ in features.edges if hasattr(asm.edges[i], "channel_weights")}
    with torch.no_grad():
        for k in range(0, len(x), batch):
            xb = x[k:k + batch].to(asm.device)
            sources = features.source_features(xb)
            for i, e in features.edges:
                if i in values:
                    s = sources[".".join(endpoint(asm, e.source))]
                    values[i].append(asm.edges[i].channel_weights(s)[1].double().cpu())
    means, sds = [None] * len(asm.checked.edges), [None] * len(asm.checked.edges)
    for i, chunks in values.items():
        lam = torch.cat(chunks)
        means[i], sds[i] = lam.mean().item(), (lam.std(unbiased=False).item() if len(lam) > 1 else 0.0)
    return means, sds

