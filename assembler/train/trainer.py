"""The training loop shared by every procedure: the procedure's stages in order, each with the
optimizers it declares and their schedules, epochs, progress, per-network metrics, a checkpoint
after every epoch and stage, SIGINT, resume, NaN detection, devices and DistributedDataParallel.

Randomness is a pure function of (seed, stage, epoch): the sample order of an epoch comes from a
generator seeded with them, and torch's global RNG is reseeded at the start of every epoch, so a
resumed run ends bit-identical to an uninterrupted one (its RNG state at the interruption is
saved too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import Diagnostic, SpecError, place
from ..graph import TrainSection
from ..settings import DEFAULTS, plugins
from . import distributed as dist
from . import signals, state as saved
from .batches import batches, epoch_seed, load_sources, to_device
from .evaluation import evaluate, split_validation
from .optim import Optimizers
from .procedure import Context, Outcome, Procedure, Stage, Step
from .progress import Progress


class TrainError(SpecError):
    """Training could not go on (a NaN loss, nothing trainable)."""


class Interrupted(Exception):
    """SIGINT: the step finished and the state was saved."""

    def __init__(self, path: Path | None):
        super().__init__(f"interrupted; saved {path}")
        self.path = path


def resolved_settings(section: TrainSection) -> dict[str, Any]:
    s = {**DEFAULTS, **section.settings}
    s.setdefault("procedure", {"name": "finetune", "args": {}})
    return s


@dataclass
class State:
    """Where a run stands: resumable from a checkpoint."""

    stage: int = 0  # index of the stage in progress
    epoch: int = 0  # the epoch in progress within the stage (0-based)
    step: int = 0  # batches of that epoch already done
    history: list[dict] = field(default_factory=list)  # one metrics line per finished epoch
    partial: dict = field(default_factory=dict)  # sums of the epoch in progress
    rng: dict[str, torch.Tensor] | None = None  # RNG states at an interruption


class Trainer:
    """Trains the networks of one `train` section on a compiled Assembly."""

    def __init__(self, asm, section: TrainSection, out: Path | None, *, base_dir: Path,
                 quiet: bool = False, use_cache: bool = True, device: torch.device | None = None,
                 label: str | None = None):
        self.section = section
        self.settings = resolved_settings(section)
        self.out = out
        self.base_dir = base_dir
        self.quiet = quiet
        self.use_cache = use_cache
        self.label = label or ", ".join(section.networks)
        self.state = State()
        self.optimizers: Optimizers | None = None
        self.cached_prefix = False  # whether a stage trained on cached outputs of a frozen prefix
        self.rank, self.world = dist.rank(), dist.world_size()
        self.device = device or torch.device("cpu")
        self.run_key = saved.run_key(asm.spec, self.settings, section.networks) if asm.spec is not None else ""
        asm.to(self.device)
        proc = self.settings["procedure"]
        cls = _implementation(proc["name"], section)
        self.ctx = Context(asm=asm, networks=section.networks, settings=self.settings, args=proc["args"],
                           device=self.device, quiet=quiet)
        self.procedure: Procedure = cls(self.ctx)
        self.ctx.train_data, self.ctx.test_data = load_sources(section, self.settings, asm, base_dir)
        self._hold_out()
        self.stages = self.procedure.stages()

    def _hold_out(self) -> None:
        """Keep the section's `validation` share (which `check` fills in from the procedure's
        plug-in entry or the student's section when the spec writes none) of every training
        source out of training: a seeded, stratified split, so every section with the same data
        and seed holds out the same samples. `ctx.val_data`: the first source's."""
        share = self.settings.get("validation", 0.0)
        if share <= 0:
            return
        splits: dict[int, tuple] = {}
        for i, ds in enumerate(self.ctx.train_data):
            if id(ds) not in splits:  # one source shared by several networks splits once
                splits[id(ds)] = split_validation(ds, share, self.settings["seed"])
            self.ctx.train_data[i] = splits[id(ds)][0]
        self.ctx.val_data = next(iter(splits.values()))[1]

    @property
    def asm(self):
        """The Assembly of the stage in progress."""
        return self.ctx.asm

    # -- the run ---------------------------------------------------------------------------------

    def run(self, resume_from: Path | None = None) -> Outcome:
        """Train every stage (from where a checkpoint stopped, with `resume_from`); the outcome
        is saved as the complete checkpoint."""
        resumed = None
        if resume_from is not None:
            resumed = saved.read_state(self, resume_from)
            saved.restore_procedure(self, *resumed)
        else:
            self.procedure.initialize()
        self.procedure.setup()
        progress = Progress(enabled=not self.quiet and self.rank == 0, label=self.label)
        with signals.StopRequest() as stop:
            self.stop = stop
            while self.state.stage < len(self.stages):
                self._stage(self.stages[self.state.stage], progress, resume_from if resumed else None, resumed)
                resumed = None
        outcome = self.procedure.finish()
        if outcome.metrics:
            self.state.history.append({"stage": "final", **outcome.metrics})
        if self.out is not None and self.rank == 0:
            saved.save_state(self, complete=True, asm=outcome.asm, extra_metrics=outcome.metrics)
        return outcome

    def _stage(self, stage: Stage, progress: Progress, resume_from, resumed) -> None:
        """Train one stage. Its checkpoints hold the stage's own Assembly: one is written when it
        starts (after the procedure built it), so a resume always loads weights into the
        Assembly they came from."""
        self.ctx.stage = stage
        asm = self.procedure.enter(stage)
        if asm is None:  # the procedure skips it (e.g. a pruning that leaves nothing)
            self._next_stage()
            return
        self.ctx.asm = asm.to(self.device)
        self._wrap(stage)
        self.optimizers = Optimizers(self.procedure.optimizers(stage), self.settings, stage.epochs)
        if not self.optimizers:
            raise TrainError(Diagnostic(f"{self.label} has nothing trainable"
                                        f"{'' if len(self.stages) == 1 else f' in stage {stage.name!r}'}",
                                        *place(self.section.span),
                                        hint="mark some bindings trainable, or add new layers"))
        if resumed is not None:
            saved.restore_stage(self, resume_from, *resumed)
        elif self.state.stage > 0 and self.out is not None and self.rank == 0:
            self.save(complete=False)
        while self.state.epoch < stage.epochs:
            self._epoch(stage, progress)
        self.procedure.exit(stage)
        self._next_stage()

    def _next_stage(self) -> None:
        self.state.stage, self.state.epoch, self.state.step = self.state.stage + 1, 0, 0
        self.ctx.wrappers = {}

    def _wrap(self, stage: Stage) -> None:
        """DDP wrappers when distributed, or train on cached outputs of a frozen prefix."""
        self.ctx.wrappers = {}
        nets = self.procedure.networks(stage)
        if self.world > 1 and self.procedure.ddp:
            self.ctx.wrappers = dist.wrap(self.ctx.asm, nets)
        elif self.use_cache and self.procedure.cacheable and self.world == 1 and len(self.section.networks) == 1:
            from .prefix import Features, cached
            got = cached(self.ctx.asm, nets[0], [ds.x for ds in self.ctx.train_data], self.device)
            if got is not None:
                suffix, feats = got
                self.ctx.wrappers[nets[0]] = suffix
                self._features = [Features(f, ds.y) for f, ds in zip(feats, self.ctx.train_data)]
                self.cached_prefix = True
                return
        self._features = None

    # -- one epoch -------------------------------------------------------------------------------

    def _epoch(self, stage: Stage, progress: Progress) -> None:
        st = self.state
        epoch_batches = self._start_epoch()
        start = time.perf_counter()
        bar = progress.epoch(stage.name, st.epoch, stage.epochs, len(epoch_batches), initial=st.step)
        for k in range(st.step, len(epoch_batches)):
            signals.inject(st.stage, st.epoch, k)
            batch = to_device(epoch_batches[k], self.device)
            result = self.procedure.step(batch, self.optimizers.torch)
            if not torch.isfinite(result.loss):
                self._nan(stage, k, result.loss)
            self._accumulate(result, batch)
            st.step = k + 1
            bar.update(result.loss.item())
            if self.world > 1:  # every rank stops at the same step
                self.stop.requested = dist.any_rank(self.stop.requested)
            if self.stop.requested and k + 1 < len(epoch_batches):
                st.partial["seconds"] += time.perf_counter() - start
                st.rng = _get_rng(self.device)
                bar.close()
                self._interrupt()
        st.partial["seconds"] += time.perf_counter() - start
        bar.close()
        self._end_epoch(stage, progress)

    def _start_epoch(self) -> list:
        """Learning rates, the RNG (seeded, or restored mid-epoch), modes; the epoch's batches."""
        st, s = self.state, self.settings
        self.ctx.epoch = st.epoch
        self.optimizers.start_epoch(st.epoch)
        if st.step == 0 or st.rng is None:
            torch.manual_seed(epoch_seed(s["seed"], st.epoch, st.stage) ^ 0x5EED)
            st.partial = {"loss": 0.0, "steps": 0, "terms": {}, "seconds": 0.0, "nets": {}}
        else:
            _set_rng(st.rng)
            st.rng = None
        for m in self.procedure.train_modules():
            m.train()
        data = self._features or self.ctx.train_data
        out = batches(data, s["batch"], s["seed"], st.epoch, st.stage, self.rank, self.world)
        if not out:
            raise TrainError(Diagnostic(
                f"the training data of {self.label} ({', '.join(f'{len(d)} sample(s)' for d in data)}"
                f"{'' if self.world == 1 else f' over {self.world} processes'}) makes no batch of 2 or more "
                "samples: batch-norm cannot train on one sample",
                *place(self.section.spans.get("data") or self.section.span), hint="give at least 2 samples per process"))
        return out

    def _end_epoch(self, stage: Stage, progress: Progress) -> None:
        """Metrics, a checkpoint, and a stop when Ctrl-C came during the epoch's last step."""
        st = self.state
        metrics = self._epoch_metrics(stage)
        st.history.append(metrics)
        st.epoch, st.step = st.epoch + 1, 0
        progress.line(metrics)
        if self.out is not None and self.rank == 0:
            self.save(complete=False)
        dist.barrier()
        if self.stop.requested and not (st.epoch >= stage.epochs and st.stage == len(self.stages) - 1):
            self._interrupt()

    def _accumulate(self, result: Step, batch) -> None:
        p = self.state.partial
        p["loss"] += result.loss.item()
        p["steps"] += 1
        for key, v in result.terms.items():
            p["terms"][key] = p["terms"].get(key, 0.0) + float(v)
        for name, logits in result.outputs.items():
            y = batch[self.section.networks.index(name)][1]
            if bool((y < 0).any()):  # label-free data: no accuracy
                continue
            n = p["nets"].setdefault(name, {"correct": 0, "seen": 0, "loss": 0.0})
            n["correct"] += int((logits.detach().argmax(1) == y).sum())
            n["seen"] += len(y)
            n["loss"] += float(torch.nn.functional.cross_entropy(logits.detach(), y, reduction="sum"))

    def _epoch_metrics(self, stage: Stage) -> dict:
        p = dist.reduce_sums(self.state.partial)
        steps = max(1, p["steps"])
        m: dict[str, Any] = {"epoch": self.state.epoch + 1}
        if len(self.stages) > 1:
            m["stage"] = stage.name
        m["loss"] = p["loss"] / steps
        m.update({k: v / steps for k, v in p["terms"].items()})
        nets = self.procedure.networks(stage)
        per = {}
        for name in nets:
            got = p["nets"].get(name)
            row = {"train_accuracy": got["correct"] / got["seen"] if got and got["seen"] else None,
                   "train_loss": got["loss"] / got["seen"] if got and got["seen"] else None}
            ev = self.evaluate(name)
            if ev is not None:
                row["test_accuracy"], row["test_loss"] = ev["accuracy"], ev["loss"]
            per[name] = row
        if len(self.section.networks) == 1:
            m.update(per[nets[0]])
        else:
            m["networks"] = per
        m.update(self.procedure.evaluate())
        m.update(self.optimizers.lrs())
        m["seconds"] = round(p["seconds"], 4)
        return m

    def evaluate(self, name: str) -> dict | None:
        """Accuracy and loss of a trained network on its own test data."""
        ds = self.ctx.test_data[self.section.networks.index(name)]
        if ds is None:
            return None
        return evaluate(self.ctx.asm.network(name), ds, self.settings["batch"] * 4)

    # -- stopping --------------------------------------------------------------------------------

    def _nan(self, stage: Stage, step: int, loss) -> None:
        kept = f"; the last good checkpoint is kept in {self.out}" if self.out and self.state.history else ""
        raise TrainError(Diagnostic(
            f"the loss became {loss.item()} at epoch {self.state.epoch + 1}, step {step + 1}"
            f"{'' if len(self.stages) == 1 else f' of stage {stage.name!r}'}{kept}",
            *place(self.section.spans.get("optimizer") or self.section.span),
            hint="lower the learning rate (--set optimizer=...) or check the data"))

    def _interrupt(self) -> None:
        if self.out is not None and self.rank == 0:
            self.save(complete=False)
        dist.barrier()
        raise Interrupted(self.out)

    def save(self, complete: bool) -> None:
        saved.save_state(self, complete)


def _implementation(name: str, section: TrainSection):
    """The class of a registered procedure, or a located error when this version lacks it."""
    try:
        cls = plugins("procedure")[name].resolve()
    except (ImportError, AttributeError):
        cls = None
    if cls is None:
        raise TrainError(Diagnostic(f"procedure '{name}' is registered but not implemented in this version",
                                    *place(section.spans.get("procedure") or section.span),
                                    hint="use another procedure, or a version of assembler that implements it"))
    return cls


def _get_rng(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
