"""The training loop shared by every procedure: optimizer over trainable parameters only,
schedules, epochs, progress, metrics, a checkpoint after every epoch, SIGINT, resume,
NaN detection and DistributedDataParallel under torchrun.

Randomness is a pure function of (seed, epoch): the sample order of epoch e comes from a
generator seeded with (seed, e), and torch's global RNG is reseeded at the start of every
epoch, so a resumed run ends bit-identical to an uninterrupted one (its RNG state at the
interruption is saved too).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import data as data_mod
from ..errors import Diagnostic, SpecError
from ..graph import TrainSection
from ..settings import DEFAULTS, plugins
from . import distributed as dist
from .procedure import Batch, Context, Procedure, first_output
from .progress import Progress


class TrainError(SpecError):
    """Training could not go on (a NaN loss, an unimplemented procedure)."""


class Interrupted(Exception):
    """SIGINT: the step finished and the state was saved."""

    def __init__(self, path: Path):
        super().__init__(f"interrupted; saved {path}")
        self.path = path


def schedule_factor(schedule: dict, epoch: int, epochs: int) -> float:
    """The learning-rate multiplier of an epoch (0-based): a pure function."""
    name, args = schedule["name"], schedule.get("args", {})
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
    if name == "step":
        return args.get("gamma", 0.1) ** (epoch // args["every"])
    return 1.0


def make_optimizer(spec: dict, groups: list[dict]) -> torch.optim.Optimizer:
    name, a = spec["name"], spec["args"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=a["lr"], momentum=a["momentum"], weight_decay=a["weight_decay"],
                               nesterov=a["nesterov"] and a["momentum"] > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=a["lr"], weight_decay=a["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=a["lr"], weight_decay=a["weight_decay"])
    factory = plugins("optimizer")[name].resolve()
    return factory(groups, **a)


def resolved_settings(section: TrainSection) -> dict[str, Any]:
    s = {**DEFAULTS, **section.settings}
    s.setdefault("procedure", {"name": "finetune", "args": {}})
    return s


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2 ** 63)


@dataclass
class State:
    """Where a run stands: resumable from a checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # batches of that epoch already done
    history: list[dict] = field(default_factory=list)  # one metrics line per finished epoch
    partial: dict = field(default_factory=dict)  # sums of the epoch in progress
    rng: torch.Tensor | None = None  # torch RNG state at an interruption


class Trainer:
    """Trains the networks of one `train` section on a compiled Assembly."""

    def __init__(self, asm, section: TrainSection, out: Path | None, *, base_dir: Path,
                 quiet: bool = False, use_cache: bool = True, procedure_factory=None):
        self.asm = asm
        self.section = section
        self.settings = resolved_settings(section)
        self.out = out
        self.base_dir = base_dir
        self.quiet = quiet
        self.state = State()
        self.stop_requested = False
        self.use_cache = use_cache
        self.rank, self.world = dist.rank(), dist.world_size()
        proc = self.settings["procedure"]
        plugin = plugins("procedure")[proc["name"]]
        try:
            cls = plugin.resolve()
        except (ImportError, AttributeError):
            cls = None
        if procedure_factory is not None:
            cls = procedure_factory
        if cls is None:
            raise TrainError(Diagnostic(
                f"procedure '{proc['name']}' is registered but not implemented in this version",
                *(_place(section.spans.get("procedure") or section.span)),
                hint="use finetune or distill, or a version of assembler that implements it"))
        self.ctx = Context(asm=asm, networks=section.networks, settings=self.settings, args=proc["args"])
        self.procedure: Procedure = cls(self.ctx)
        self.train_data, self.test_data = self._load_data()
        self.val_data = None
        if self.procedure.validation > 0:
            self.train_data[0], self.val_data = split_validation(self.train_data[0], self.procedure.validation,
                                                                 self.settings["seed"])

    # -- data ------------------------------------------------------------------------------------

    def _load_data(self):
        s = self.settings
        if "data" not in s:
            raise TrainError(Diagnostic(f"train section for {', '.join(self.section.networks)} has no 'data'",
                                        *_place(self.section.span), hint='add e.g. data = digits(split="train")'))
        span = self.section.spans.get("data")
        calls = s["data"] if isinstance(s["data"], list) else [s["data"]]
        train = [data_mod.load(c, self.base_dir, span, seed=s["seed"]) for c in calls]
        if "test" in s:
            tcalls = s["test"] if isinstance(s["test"], list) else [s["test"]]
            tspan = self.section.spans.get("test")
            test = [data_mod.load(c, self.base_dir, tspan, seed=s["seed"]) for c in tcalls]
        else:
            test = [data_mod.load(t, self.base_dir, span, seed=s["seed"]) if (t := data_mod.test_split(c)) else None
                    for c in calls]
        for i, name in enumerate(self.section.networks):
            net = self.asm.checked.networks[name]
            (input_name, shape), = list(net.inputs.items())[:1] or [(None, None)]
            ds = train[min(i, len(train) - 1)]
            outputs = net.node(net.outputs[0]).shape if net.outputs else None
            data_mod.fits(ds, shape, span, input_name=input_name, outputs=outputs[0] if outputs else None)
        return train, test

    def _cache_prefixes(self) -> None:
        """Train on cached outputs of frozen prefixes where the procedure allows it."""
        if not (self.use_cache and self.procedure.cacheable and self.world == 1 and len(self.section.networks) == 1):
            return
        from .prefix import Features, cached
        name = self.section.networks[0]
        got = cached(self.asm, name, [ds.x for ds in self.train_data])
        if got is None:
            return
        suffix, feats = got
        self.ctx.wrappers[name] = suffix
        self.train_data = [Features(f, ds.y) for f, ds in zip(feats, self.train_data)]

    def batches(self, epoch: int) -> list[Batch]:
        """The batches of an epoch: per data source a permutation seeded by (seed, epoch), this
        rank's shard of it; several sources are zipped, shorter ones cycled."""
        bs = self.settings["batch"]
        g = torch.Generator().manual_seed(_epoch_seed(self.settings["seed"], epoch))
        orders = []
        for ds in self.train_data:
            perm = torch.randperm(len(ds), generator=g)
            if self.world > 1:
                per = math.ceil(len(perm) / self.world)
                perm = torch.cat([perm, perm[: per * self.world - len(perm)]])[self.rank::self.world]
            orders.append(perm)
        steps = max(math.ceil(len(o) / bs) for o in orders)
        out = []
        for k in range(steps):
            batch = []
            for ds, order in zip(self.train_data, orders):
                idx = order[(torch.arange(k * bs, (k + 1) * bs) % len(order))] if len(order) < (k + 1) * bs \
                    and len(self.train_data) > 1 else order[k * bs:(k + 1) * bs]
                batch.append((ds.x[idx], ds.y[idx]))
            if min(len(b[1]) for b in batch) < 2:  # batch-norm cannot train on one sample
                continue
            out.append(batch)
        return out

    # -- the loop --------------------------------------------------------------------------------

    def run(self, resume_from: Path | None = None) -> list[dict]:
        s = self.settings
        epochs = s["epochs"]
        self.ctx.wrappers = dist.wrap(self.asm, self.section.networks) \
            if self.world > 1 and self.procedure.ddp else {}
        self._cache_prefixes()
        self.procedure.setup()
        groups = self.procedure.param_groups()
        if not any(g["params"] for g in groups):
            raise TrainError(Diagnostic(f"{', '.join(self.section.networks)} has nothing trainable",
                                        *_place(self.section.span),
                                        hint="mark some bindings trainable, or add new layers"))
        self.optimizer = make_optimizer(s["optimizer"], groups)
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"]
        if resume_from is not None:
            from .state import load_state
            load_state(self, resume_from)
        progress = Progress(enabled=not self.quiet and self.rank == 0)
        with _catch_sigint(self):
            while self.state.epoch < epochs:
                self._epoch(self.state.epoch, epochs, progress)
        extra = self.procedure.finish(self)
        if extra and not (self.state.history and self.state.history[-1].get("stage") == "final"):
            self.state.history.append({"epoch": epochs, "stage": "final", **extra})
        if self.out is not None and self.rank == 0:
            self.save(complete=True)
        return self.state.history

    def _epoch(self, epoch: int, epochs: int, progress: Progress) -> None:
        s = self.settings
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * schedule_factor(s["schedule"], epoch, epochs)
        if self.state.step == 0 or self.state.rng is None:
            torch.manual_seed(_epoch_seed(s["seed"], epoch) ^ 0x5EED)
            self.state.partial = {"loss": 0.0, "correct": 0, "seen": 0, "steps": 0, "terms": {}, "seconds": 0.0}
        else:
            torch.set_rng_state(self.state.rng)
            self.state.rng = None
        for m in self.procedure.train_modules():
            m.train()
        batches = self.batches(epoch)
        p = self.state.partial
        start = time.perf_counter()
        bar = progress.epoch(epoch, epochs, len(batches), initial=self.state.step)
        for k in range(self.state.step, len(batches)):
            loss, terms, logits = self.procedure.step(batches[k], self.optimizer)
            if not torch.isfinite(loss):
                self._nan(epoch, k, loss)
            p["loss"] += loss.item()
            p["steps"] += 1
            for key, v in terms.items():
                p["terms"][key] = p["terms"].get(key, 0.0) + float(v)
            if logits is not None:
                y = batches[k][0][1]
                p["correct"] += int((logits.detach().argmax(1) == y).sum())
                p["seen"] += len(y)
            self.state.step = k + 1
            bar.update(loss.item())
            if self.world > 1:  # every rank stops at the same step
                self.stop_requested = dist.any_rank(self.stop_requested)
            if self.stop_requested and k + 1 < len(batches):
                p["seconds"] += time.perf_counter() - start
                self.state.rng = torch.get_rng_state()
                bar.close()
                self._interrupt()
        p["seconds"] += time.perf_counter() - start
        bar.close()
        metrics = self._epoch_metrics(epoch)
        self.procedure.on_epoch_end(epoch, metrics)
        self.state.history.append(metrics)
        self.state.epoch, self.state.step = epoch + 1, 0
        progress.line(metrics)
        if self.out is not None and self.rank == 0:
            self.save(complete=False)
        dist.barrier()
        if self.stop_requested and self.state.epoch < epochs:
            self._interrupt()

    def _epoch_metrics(self, epoch: int) -> dict:
        p = dist.reduce_sums(self.state.partial)
        steps = max(1, p["steps"])
        m = {"epoch": epoch + 1, "loss": p["loss"] / steps}
        m.update({k: v / steps for k, v in p["terms"].items()})
        m["train_accuracy"] = p["correct"] / p["seen"] if p["seen"] else None
        ev = self.evaluate()
        if ev is not None:
            m["test_accuracy"], m["test_loss"] = ev["accuracy"], ev["loss"]
        m["lr"] = self.optimizer.param_groups[0]["lr"]
        m["seconds"] = round(p["seconds"], 4)
        return m

    def evaluate(self) -> dict | None:
        """Accuracy and loss of the first trained network on its test data."""
        ds = self.test_data[0] if self.test_data else None
        if ds is None:
            return None
        return evaluate(self.asm.network(self.section.networks[0]), ds, self.settings["batch"] * 4)

    def _nan(self, epoch: int, step: int, loss) -> None:
        kept = f"; the last good checkpoint is kept in {self.out}" if self.out and self.state.history else ""
        raise TrainError(Diagnostic(
            f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}{kept}",
            *_place(self.section.spans.get("optimizer") or self.section.span),
            hint="lower the learning rate (--set optimizer=...) or check the data"))

    def _interrupt(self) -> None:
        if self.out is not None and self.rank == 0:
            self.save(complete=False)
        dist.barrier()
        raise Interrupted(self.out)

    def save(self, complete: bool) -> None:
        from .state import save_state
        save_state(self, complete)


def split_validation(ds, share: float, seed: int):
    """(train, validation): a seeded, stratified share of each class held out."""
    g = torch.Generator().manual_seed(seed + 104_729)
    keep, held = [], []
    for c in torch.unique(ds.y).tolist():
        idx = torch.nonzero(ds.y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = max(1, round(len(idx) * share)) if len(idx) > 1 else 0
        held.append(idx[:n])
        keep.append(idx[n:])
    keep, held = torch.cat(keep).sort().values, torch.cat(held).sort().values
    part = lambda i, tag: type(ds)(ds.x[i], ds.y[i], ds.classes, f"{ds.name}[{tag}]", ds.class_names)  # noqa: E731
    return part(keep, "train"), part(held, "validation")


def evaluate(model: nn.Module, ds, batch: int = 256, per_class: bool = False) -> dict:
    """Accuracy and cross-entropy of a model's first output on a dataset (eval mode)."""
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    classes = torch.zeros(0)
    hits = torch.zeros(0)
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            x, y = ds.x[i:i + batch], ds.y[i:i + batch]
            logits = first_output(model(x))
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            correct += int((pred == y).sum())
            n += len(y)
            if per_class:
                k = logits.shape[1]
                if classes.numel() < k:
                    classes, hits = torch.zeros(k), torch.zeros(k)
                classes += torch.bincount(y, minlength=k)[:k].float()
                hits += torch.bincount(y[pred == y], minlength=k)[:k].float()
    model.train(was)
    out = {"accuracy": correct / max(1, n), "loss": loss / max(1, n), "samples": n}
    if per_class:
        out["per_class"] = {str(i): (hits[i] / classes[i]).item() if classes[i] else None
                            for i in range(len(classes))}
    return out


def _place(span) -> tuple:
    if span is None:
        return ("<spec>",)
    return (span.file, span.line, span.column)


class _catch_sigint:
    """SIGINT finishes the current step, then the trainer saves and stops."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.old = None

    def __enter__(self):
        def handler(signum, frame):
            if self.trainer.stop_requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.trainer.stop_requested = True
            print("\ninterrupt: finishing the step and saving (Ctrl-C again to abort)", file=sys.stderr)
        try:
            self.old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            self.old = None
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False
