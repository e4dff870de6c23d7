"""The procedure plug-in contract. A procedure says what a step computes; the trainer
(`trainer.py`) owns everything that must survive an interruption: the optimizers it declares,
their schedules, epochs and stages, metrics, checkpoints, resume, devices and distributed
training.

A procedure declares:
  stages()              ordered stages (name, epochs); one "train" stage by default
  enter(stage)          the Assembly a stage trains (default: the current one); None skips it
  optimizers(stage)     named optimizers over parameter groups: "model" by default, the
                        section's optimizer over the trained networks' trainable parameters
  initialize()          one-time work of a fresh run (identical initial weights, snapshots)
  setup()               work on every start, fresh or resumed (teachers, structures): no
                        change to weights or state
  step(batch, opts)     one update -> Step(loss, terms, outputs); the default: zero_grad,
                        loss(batch), backward, step every optimizer of the stage
  loss(batch)           the default step's loss -> Step
  evaluate()            extra metrics after each epoch (e.g. recombination accuracy)
  exit(stage)           after a stage's last epoch (snapshots for later stages)
  state_dict()/load_state_dict(state)
                        whatever else it keeps (JSON values and tensors), saved with every
                        checkpoint and restored before the first resumed step
  finish()              -> Outcome(asm, metrics): the Assembly to save (a new one, e.g.
                        NetTailor's tailored network) and final metrics; never edits the trainer

A batch is a list with one `(x, y)` per data source, in the order of the section's networks
(one source serves every network when the section gives one). `y` is all -1 for a label-free
source (`noise`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

Batch = list[tuple[torch.Tensor, torch.Tensor]]  # one (x, y) per data source / trained network


@dataclass(frozen=True)
class Stage:
    """One phase of a procedure: trained for `epochs` epochs, checkpointed, resumable."""

    name: str
    epochs: int
    networks: tuple[str, ...] | None = None  # networks trained and evaluated (default: the section's)


@dataclass
class Optim:
    """A named optimizer a procedure declares. `optimizer` and `schedule` are checked setting
    values (`{"name": "adam", "args": {...}}`); None means the section's."""

    groups: list[dict]  # torch param groups: {"params": [...], other settings overriding}
    optimizer: dict | None = None
    schedule: dict | None = None


@dataclass
class Step:
    """What a step reports: the loss (a tensor), named terms for the metrics and, per network,
    the logits its labels score (train accuracy and loss per network)."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Outcome:
    """What training leaves: the Assembly to save and final metrics."""

    asm: Any
    metrics: dict = field(default_factory=dict)


@dataclass
class Context:
    """What a procedure sees. `asm` is the Assembly of the current stage."""

    asm: Any  # assembler.compiler.Assembly
    networks: tuple[str, ...]  # the networks this section trains, in order
    settings: dict[str, Any]
    args: dict[str, Any]  # the procedure's own arguments, defaults filled in
    train_data: list = field(default_factory=list)  # one Dataset per network (class names: .class_names)
    test_data: list = field(default_factory=list)  # one Dataset (or None) per network
    val_data: Any = None  # held-out training data when the procedure asks for some (`validation`)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrappers: dict[str, nn.Module] = field(default_factory=dict)  # DDP wrappers, or a cached-prefix suffix
    stage: Stage | None = None
    epoch: int = 0  # the epoch in progress within the stage (0-based)
    quiet: bool = False

    def model(self, name: str) -> nn.Module:
        """The network to call in a step: its DDP wrapper when distributed (or the suffix over
        cached prefix features), else its GraphModule."""
        return self.wrappers[name] if name in self.wrappers else self.asm.network(name)

    def data_for(self, name: str):
        return self.train_data[self.networks.index(name)]


def first_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class Procedure:
    """Base class: the networks of the section trained on the cross-entropy of their first
    output, each against its own data source."""

    name = "procedure"
    cacheable = False  # True when every step only calls ctx.model(network) on its batch
    ddp = True  # steps go through ctx.model (DDP wrappers); False: gradients are averaged by hand
    uses_edges = False  # the trained networks' matching edges are part of the model (their regressors train)

    def __init__(self, ctx: Context):
        self.ctx = ctx

    # -- declarations ----------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        return [Stage("train", self.ctx.settings["epochs"])]

    def networks(self, stage: Stage | None = None) -> tuple[str, ...]:
        stage = stage or self.ctx.stage
        return stage.networks if stage is not None and stage.networks else self.ctx.networks

    def parameters(self, stage: Stage | None = None) -> list[nn.Parameter]:
        """Trainable parameters of the stage's networks (each once); frozen ones never appear."""
        return unique(p for n in self.networks(stage)
                      for p in self.ctx.asm.named_parameters(n, edges=self.uses_edges).values())

    def optimizers(self, stage: Stage) -> dict[str, Optim]:
        return {"model": Optim([{"params": self.parameters(stage)}])}

    def enter(self, stage: Stage):
        """The Assembly `stage` trains (default: the current one), or None to skip the stage."""
        return self.ctx.asm

    # -- life cycle ------------------------------------------------------------------------------

    def initialize(self) -> None:
        """One-time work of a fresh run; never called on resume (state comes from the checkpoint)."""

    def setup(self) -> None:
        """Called on every start, fresh or resumed, before the first stage."""

    def exit(self, stage: Stage) -> None:
        """Called after the last epoch of a stage."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def finish(self) -> Outcome:
        return Outcome(self.ctx.asm)

    # -- one step --------------------------------------------------------------------------------

    def loss(self, batch: Batch) -> Step:
        total, terms, outputs = 0.0, {}, {}
        for name, (x, y) in zip(self.networks(), self._batches(batch)):
            logits = first_output(self.ctx.model(name)(x))
            ce = F.cross_entropy(logits, y)
            total = total + ce
            terms["ce" if len(self.networks()) == 1 else f"ce.{name}"] = ce.item()
            outputs[name] = logits
        return Step(total, terms, outputs)

    def _batches(self, batch: Batch) -> Batch:
        """The batch of each of the stage's networks (by their position in the section)."""
        return [batch[self.ctx.networks.index(n)] for n in self.networks()]

    def step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> Step:
        """One update. The default: loss, backward, every optimizer steps."""
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        result = self.loss(batch)
        if not torch.isfinite(result.loss):
            return result
        result.loss.backward()
        self.after_backward(optimizers)
        for opt in optimizers.values():
            opt.step()
        return result

    def after_backward(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Between backward and the optimizer steps. Under torchrun, a procedure that calls plain
        graphs (taps) rather than the DDP wrappers has its gradients averaged here."""
        if not self.ddp:
            from .distributed import average_gradients
            average_gradients(p for opt in optimizers.values() for g in opt.param_groups for p in g["params"])

    def evaluate(self) -> dict[str, Any]:
        """Extra metrics after each epoch's evaluation."""
        return {}

    def train_modules(self) -> list[nn.Module]:
        """Modules whose train/eval mode follows the trainer's (the networks being trained)."""
        return [self.ctx.asm.network(n) for n in self.networks()]


class Finetune(Procedure):
    """Task loss only: the direct-learn / scratch baseline of every paper."""

    name = "finetune"
    cacheable = True  # reads only the trained network's output: its frozen prefix can be cached
