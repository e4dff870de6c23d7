"""Compatible components (Gygli, Uijlings & Ferrari, AAAI 2021; paper 002): networks trained
on different tasks so that the extractor of one works with the task head of another, with no
training after recombining.

Each network t is an extractor E_t and a task head H_t (`assembler.checks.compat` reads them
off the spec); `aux` lists shared auxiliary heads, single modules applied to every extractor.
Per task t and minibatch (eq. 1-2):

    L_t = CE(H_t(E_t(x)), y)
        + 1/|S| sum_{s in S} CE(R(E_t(rot_s(x))), s)               RP, S = 0/90/180/270 degrees
        + 1/|B| sum_i 1[y_i in C] CE(D(E_t(x_i)), c(y_i))          DCC, c: label -> common index

`schedule="joint"`: one stage; each step takes a minibatch of every task and, as the paper
does, alternates: one optimizer step on task a's minibatch, then one on task b's, so the shared
heads move with each task's gradient in turn (each network only gets gradients from its own
task either way; summing would instead give the shared heads one step on both tasks' sum).
`schedule="incremental"`: one stage per network, in the section's order; a stage trains its
network and the auxiliary heads no earlier network used, and the heads trained earlier stay
frozen: their parameters get no gradient and their batch-norm keeps its running statistics
(they still normalise with batch statistics, the regime they were trained in).
`iiw=true`: before the first step every network gets the first network's initial weights.

Recombination accuracy (`assembler.train.recombination`) is reported after every epoch of the
last stage, under `recombination`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks.compat import SplitError, common_classes, head_size, roles, split_network, uses
from ..errors import Diagnostic, SpecError
from . import functional as fn
from . import recombination as rc
from .procedure import Batch, Optim, Procedure, Stage, Step, unique


def rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four rotations of a batch of images (0, 90, 180, 270 degrees counter-clockwise,
    stacked in that order) and their labels 0-3."""
    xs = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    return xs, torch.arange(4, device=x.device).repeat_interleave(len(x))


class Compat(Procedure):
    name = "compat"
    ddp = False  # the steps call pieces of graphs; gradients are averaged by hand under torchrun

    def __init__(self, ctx):
        super().__init__(ctx)
        a = ctx.args
        nets = [ctx.asm.checked.networks[n] for n in ctx.networks]
        try:
            self.splits = {n.name: split_network(n, a["aux"]) for n in nets}
        except SplitError as e:
            raise self._error(str(e), e.hint) from None
        self.sizes = {h: head_size(nets, self.splits, h) for h in a["aux"]}
        self.parts = rc.Parts(ctx.asm)
        self.common: list[str] = []
        self.rotation: list[str] = []
        self.dcc: list[str] = []

    def _error(self, message: str, hint: str | None = None) -> SpecError:
        return SpecError(Diagnostic(f"compat: {message}", self.ctx.asm.checked.filename, hint=hint))

    # -- declarations ----------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        epochs = self.ctx.settings["epochs"]
        if self.ctx.args["schedule"] == "joint":
            return [Stage("train", epochs)]
        return [Stage(f"train-{n}", epochs, networks=(n,)) for n in self.ctx.networks]

    def trained_heads(self, stage: Stage) -> list[str]:
        """The auxiliary heads a stage trains: all of them jointly; incrementally, those that
        the stage's network is the first to use."""
        if self.ctx.args["schedule"] == "joint":
            return list(self.ctx.args["aux"])
        net = stage.networks[0]
        earlier = self.ctx.networks[:self.ctx.networks.index(net)]
        return [h for h in self.splits[net].aux if not any(h in self.splits[e].aux for e in earlier)]

    def _head_params(self, heads: list[str]) -> list[torch.nn.Parameter]:
        mods = self.ctx.asm.modules
        return unique(p for k in mods for h in heads if uses(k, h) for p in mods[k].parameters() if p.requires_grad)

    def optimizers(self, stage: Stage) -> dict[str, Optim]:
        aux = {id(p) for p in self._head_params(list(self.ctx.args["aux"]))}
        own = [p for n in self.networks(stage) for p in self.ctx.asm.named_parameters(n, edges=False).values()
               if id(p) not in aux]
        return {"model": Optim([{"params": unique(own + self._head_params(self.trained_heads(stage)))}])}

    # -- life cycle ------------------------------------------------------------------------------

    def initialize(self) -> None:
        """IIW: every network's own modules start from the first network's initial weights."""
        if not self.ctx.args["iiw"]:
            return
        first, mods = self.ctx.networks[0], self.ctx.asm.modules
        with torch.no_grad():
            for other in self.ctx.networks[1:]:
                for key in [k for k in mods if k.startswith(first + ".")]:
                    twin = other + key[len(first):]
                    if twin not in mods:
                        raise self._error(f"iiw: {other} has no module {twin} to match {key}",
                                          "give the networks identical architectures, or drop iiw")
                    mods[twin].load_state_dict(mods[key].state_dict())

    def setup(self) -> None:
        """The common classes and the label maps, from the data's class names."""
        a = self.ctx.args
        train_names = [rc.class_names(ds) for ds in self.ctx.train_data]
        self.common = common_classes(a["common"], train_names)
        for net, names in zip(self.ctx.networks, train_names):
            lacking = [c for c in self.common if c not in names]
            if lacking:
                raise self._error(f"common class {lacking[0]} is not a class of {net}'s data (it has "
                                  f"{', '.join(names)})", "common lists classes every network's data has")
        try:
            used = [h for h in a["aux"] if any(h in s.aux for s in self.splits.values())]
            self.rotation, self.dcc = roles(used, a.get("rotation"), len(self.common), self.sizes)
        except SplitError as e:
            raise self._error(str(e), e.hint) from None
        self.head_names = dict(zip(self.ctx.networks, train_names))
        self.maps = {n: rc.label_map(names, self.common).to(self.ctx.device) for n, names in self.head_names.items()}

    # -- one step --------------------------------------------------------------------------------

    def step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> Step:
        """One optimizer step per task, in turn (the paper's alternating minibatches)."""
        total, terms, outputs = torch.zeros((), device=self.ctx.device), {}, {}
        for name, (x, y) in zip(self.networks(), self._batches(batch)):
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss, own, logits = self.task_loss(name, x, y)
            if not torch.isfinite(loss):
                return Step(loss.detach(), terms, outputs)
            loss.backward()
            self.after_backward(optimizers)
            for opt in optimizers.values():
                opt.step()
            total = total + loss.detach()
            terms.update({f"{k}.{name}": v for k, v in own.items()})
            outputs[name] = logits.detach()
        return Step(total, terms, outputs)

    def task_loss(self, name: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """L_t of one task's minibatch: (loss, its terms, the task head's logits)."""
        split = self.splits[name]
        extractor = self.parts.extractor(split)
        feats = extractor(x)
        logits = self.parts.head(split)(feats)
        loss = F.cross_entropy(logits, y)
        terms = {"ce": loss.item()}
        for h in (h for h in self.rotation if h in split.aux):
            xr, yr = rotations(x)
            # the rotated images must not move the extractor's running statistics, which
            # describe the task's own (upright) inputs
            fr = fn.call(extractor, {}, xr, buffers=fn.buffer_copies(extractor))
            rp = F.cross_entropy(self._aux(split, h, fr), yr)
            loss, terms[h] = loss + rp, rp.item()
        for h in (h for h in self.dcc if h in split.aux):
            target = self.maps[name][y]
            keep = target >= 0
            dcc = torch.zeros((), device=x.device)
            if bool(keep.any()):  # eq. 2: summed over the common samples, averaged over the batch
                dcc = F.cross_entropy(self._aux(split, h, feats[keep]), target[keep], reduction="sum") / len(y)
            loss, terms[h] = loss + dcc, dcc.item()
        return loss, terms, logits

    def _aux(self, split, head: str, feats: torch.Tensor) -> torch.Tensor:
        """An auxiliary head on features; a head frozen in this stage gets no gradient and
        keeps its running statistics (batch statistics normalise, as when it trained)."""
        gm = self.parts.head(split, split.aux[head])
        if head in self.trained_heads(self.ctx.stage):
            return gm(feats)
        frozen = {k: p.detach() for k, p in gm.named_parameters()}
        return fn.call(gm, frozen, feats, buffers=fn.buffer_copies(gm))

    # -- metrics ---------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        """Recombination accuracy after each epoch of the last stage (earlier, incrementally,
        some networks are not trained yet)."""
        if self.ctx.stage is None or self.ctx.stage.name != self.stages()[-1].name:
            return {}
        got = recombination(self.parts, self.splits, self.ctx.networks, self.ctx.test_data, self.head_names,
                            self.common, self.ctx.settings["batch"])
        if not got:
            return {}
        # the mean over pairs also flat, so that the progress line shows it
        return {"recombination_batch": got["mean"]["batch"], "recombination_running": got["mean"]["running"],
                "recombination": got}

    @classmethod
    def eval_report(cls, asm, meta: dict, load, network: str) -> dict:
        """What `assembler eval` adds for a compat checkpoint: `recombination` (every pair, as
        in training), and `recombined` when `network` is a spec-declared recombination (an
        untrained network whose input enters one trained network's extractor and whose output
        is another's task head), measured the same way. `load(setting_value, index)` loads a
        recorded data setting of the trained network at `index`."""
        train = meta.get("train", {})
        nets, settings = train.get("networks") or [], meta.get("settings", {})
        args = settings.get("procedure", {}).get("args", {})
        splits = {n: split_network(asm.checked.networks[n], args.get("aux", [])) for n in nets}
        head_names = {n: rc.class_names(load("data", i)) for i, n in enumerate(nets)}
        tests = [load("test", i) for i in range(len(nets))]
        common = common_classes(args.get("common", []), list(head_names.values()))
        batch = settings.get("batch", 64)
        parts = rc.Parts(asm)
        got = recombination(parts, splits, nets, tests, head_names, common, batch)
        out = {"recombination": got} if got else {}
        ends = rc.recombined_ends(asm, network, nets)
        if ends is not None and got:
            e, h = ends
            out["recombined"] = rc.recombined(asm.network(network), e, h, tests[nets.index(e)], head_names[h],
                                              common, batch)
        return out


def recombination(parts, splits: dict, networks, tests: list, head_names: dict, common: list[str],
                  batch: int) -> dict | None:
    """The recombination report of trained networks, or None without common classes or test data."""
    if not common or any(t is None for t in tests):
        return None
    tasks = [rc.Task(splits[n], t, head_names[n]) for n, t in zip(networks, tests)]
    return rc.report(parts, tasks, common, batch)
