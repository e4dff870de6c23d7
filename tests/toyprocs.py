"""Toy procedures that exercise the trainer's contract (imported through ASSEMBLER_PLUGINS in
the subprocesses of test_engine.py): a bilevel one with a meta-parameter updated through two
differentiable inner steps, and a two-network one with two stages and two optimizers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from assembler.settings import Param, Plugin, register
from assembler.train import functional as fn
from assembler.train.procedure import Optim, Outcome, Procedure, Stage, Step, first_output


class ToyBilevel(Procedure):
    """CE + w * mean(logits^2), w = exp(log_w) a meta-parameter: each step a real SGD step on
    that loss, then two differentiable inner steps on it from the new weights, the CE of the
    look-ahead weights differentiated to log_w, and an Adam step on log_w ("meta")."""

    name = "toy_bilevel"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.log_w = nn.Parameter(torch.zeros((), device=ctx.device))

    def optimizers(self, stage):
        return {"model": Optim([{"params": self.parameters(stage)}]),
                "meta": Optim([{"params": [self.log_w]}], optimizer={"name": "adam", "args": {
                    "lr": self.ctx.args["meta_lr"], "weight_decay": 0.0}}, schedule={"name": "constant", "args": {}})}

    def _inner(self, logits, y):
        return F.cross_entropy(logits, y) + self.log_w.exp() * logits.pow(2).mean()

    def step(self, batch, optimizers):
        (x, y), = batch
        name = self.networks()[0]
        gm = self.ctx.asm.network(name)
        model, meta = optimizers["model"], optimizers["meta"]
        model.zero_grad(set_to_none=True)
        logits = first_output(gm(x))
        loss = self._inner(logits, y)
        loss.backward()
        model.step()
        named = dict(gm.named_parameters())
        named = {k: p for k, p in named.items() if p.requires_grad}
        params, buffers = fn.detached(named), fn.buffer_copies(gm)
        momenta = fn.momentum_buffers(model, named)
        hyper = fn.sgd_hyper(model, next(iter(named.values())))
        for _ in range(2):
            inner = self._inner(first_output(fn.call(gm, params, x, buffers=buffers)), y)
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
            params, momenta = fn.sgd_step(params, grads, momenta, **hyper)
        outer = F.cross_entropy(first_output(fn.call(gm, params, x, buffers=buffers)), y)
        meta.zero_grad(set_to_none=True)
        self.log_w.grad, = torch.autograd.grad(outer, [self.log_w])
        meta.step()
        return Step(loss.detach(), {"w": self.log_w.exp().item()}, {name: logits})

    def state_dict(self):
        return {"log_w": self.log_w.detach()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.log_w.copy_(state["log_w"])

    def finish(self):
        return Outcome(self.ctx.asm, {"log_w": self.log_w.item()})


class ToyTwoStage(Procedure):
    """Stage "first" trains network a (SGD over all of it); stage "second" trains network b
    with two optimizers: "model" (the section's) over its trunk and "head" (Adam, its own
    cosine schedule) over its last binding. The state counts steps and keeps a running loss."""

    name = "toy_two_stage"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.steps, self.running = 0, torch.zeros(())

    def stages(self):
        e = self.ctx.settings["epochs"]
        return [Stage("first", e, networks=(self.ctx.networks[0],)), Stage("second", e, networks=(self.ctx.networks[1],))]

    def optimizers(self, stage):
        if stage.name == "first":
            return super().optimizers(stage)
        b = stage.networks[0]
        head_names = {k for k in self.ctx.asm.named_parameters(b) if k.startswith("y.")}
        named = self.ctx.asm.named_parameters(b)
        return {"model": Optim([{"params": [p for k, p in named.items() if k not in head_names]}]),
                "head": Optim([{"params": [named[k] for k in sorted(head_names)]}],
                              optimizer={"name": "adam", "args": {"lr": 0.003, "weight_decay": 0.0}},
                              schedule={"name": "cosine", "args": {}})}

    def step(self, batch, optimizers):
        result = super().step(batch, optimizers)
        self.steps += 1
        self.running = 0.9 * self.running + 0.1 * result.loss.detach()
        return result

    def state_dict(self):
        return {"steps": self.steps, "running": self.running}

    def load_state_dict(self, state):
        self.steps, self.running = state["steps"], state["running"]

    def finish(self):
        return Outcome(self.ctx.asm, {"steps": self.steps, "running": self.running.item()})


register(Plugin("procedure", "toy_bilevel", (Param("meta_lr", "float", 0.01),), implementation=ToyBilevel))
register(Plugin("procedure", "toy_two_stage", (), implementation=ToyTwoStage))
