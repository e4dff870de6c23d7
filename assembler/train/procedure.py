"""The procedure plug-in interface. A procedure defines the loss of a step; where its paper
needs more it overrides the update (`step`), adds epoch hooks or ends with a graph edit
(`finish`). The trainer (trainer.py) owns everything else: optimizer over trainable
parameters only, epochs, progress, metrics, checkpoints, resume and distributed training.

How the six procedures of DESIGN.md fit (see docs/PROCEDURES.md):
  finetune     loss = CE of the trained network's first output.
  distill      loss = (1-a) CE + a T^2 KL(teacher/T || student/T); the teacher runs in eval mode
               under no_grad via `ctx.model(teacher)`.
  backdistill  loss on the adapter's input: `ctx.tapped(net, [at])` gives the adapter input; a
               pseudo-gradient variant of the graph (fx rewrite: ReLU passes gradients, max-pool
               routes them as average pooling) and `torch.autograd.grad(create_graph=True)` give
               D'_S and D'_T; `batches` may be random inputs (zero samples).
  nettailor    loss = CE + gamma1 E[C] + gamma2 Omega; `param_groups` puts the gate logits in a
               group without weight decay; `finish` prunes through `assembler.edits.prune` and
               fine-tunes again via `ctx.retrain`, returning the tailored spec.
  l2tww        overrides `step`: T inner steps on the matching loss, one on CE, the meta-gradient
               of CE w.r.t. the edge meta-networks, then the real update; the edges' meta-parameters
               get their own Adam optimizer created in `setup`.
  compat       several networks on several data sets: a batch is one (x, y) per data source; the
               shared auxiliary heads are single modules, so their gradients add up across networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

Batch = list[tuple[torch.Tensor, torch.Tensor]]  # one (x, y) per data source / trained network


@dataclass
class Context:
    """What a procedure sees: the compiled Assembly, what is trained, the checked settings."""

    asm: Any  # assembler.compiler.Assembly
    networks: tuple[str, ...]  # the networks this section trains, in order
    settings: dict[str, Any]
    args: dict[str, Any]  # the procedure's own arguments, defaults filled in
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrappers: dict[str, nn.Module] = field(default_factory=dict)  # DistributedDataParallel, when distributed
    epoch: int = 0

    def model(self, name: str, taps: Iterable[str] = ()) -> nn.Module:
        """A network to call in a step: its DDP wrapper when distributed (taps: a plain graph)."""
        taps = tuple(taps)
        if not taps and name in self.wrappers:
            return self.wrappers[name]
        return self.asm.network(name, taps)

    def tapped(self, name: str, x: torch.Tensor, taps: Iterable[str]) -> tuple[Any, dict[str, torch.Tensor]]:
        return self.model(name, taps)(x)


def first_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class Procedure:
    """Base class: one network trained on the task loss of its first output."""

    name = "procedure"
    cacheable = False  # True when every step only calls ctx.model(network) on the batch
    ddp = True  # steps go through ctx.model (DDP wrappers); False: gradients are averaged by hand
    validation = 0.0  # share of the training data held out (stratified) for the procedure's choices

    def __init__(self, ctx: Context):
        self.ctx = ctx

    # -- what is trained -------------------------------------------------------------------------

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the trained networks (each once); frozen ones never appear."""
        seen, out = set(), []
        for n in self.ctx.networks:
            for p in self.ctx.asm.trainable_parameters(n):
                if id(p) not in seen and p.requires_grad:
                    seen.add(id(p))
                    out.append(p)
        return out

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups; override to give some parameters other settings."""
        return [{"params": self.parameters()}]

    def setup(self) -> None:
        """Called once before the first step (and again on resume)."""

    # -- one step --------------------------------------------------------------------------------

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        """The loss of a step, its terms (for metrics) and the logits used for train accuracy."""
        x, y = batch[0]
        logits = first_output(self.ctx.model(self.ctx.networks[0])(x))
        ce = F.cross_entropy(logits, y)
        return ce, {"ce": ce.detach().item()}, logits

    def step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        """One update. The default: loss, backward, optimizer step. Return what `loss` returns."""
        optimizer.zero_grad(set_to_none=True)
        loss, terms, logits = self.loss(batch)
        if not torch.isfinite(loss):
            return loss, terms, logits
        loss.backward()
        self.after_backward()
        optimizer.step()
        return loss, terms, logits

    def after_backward(self) -> None:
        """Hook between backward and the optimizer step. Under torchrun, a procedure that calls
        the plain graphs (taps) rather than the DDP wrappers has its gradients averaged here."""
        if not self.ddp:
            from .distributed import average_gradients
            average_gradients(self.parameters())

    # -- epochs and the end ----------------------------------------------------------------------

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Called after each epoch's evaluation, with that epoch's metrics (may add to them)."""

    def finish(self, trainer) -> dict:
        """Called once training ends; may edit the graph (NetTailor) and return extra metrics."""
        return {}

    def train_modules(self) -> list[nn.Module]:
        """Modules whose train/eval mode follows the trainer's (networks being trained)."""
        return [self.ctx.asm.network(n) for n in self.ctx.networks]


class Finetune(Procedure):
    """Task loss only: the direct-learn / scratch baseline of every paper."""

    name = "finetune"
    cacheable = True  # reads only the trained network's output: its frozen prefix can be cached
