"""Recombination accuracy (paper 002, section 4): the extractor of one network with the task
head of another, with no training after recombining.

For every ordered pair (i, j), i != j: E_i then H_j on network i's test data, restricted to
the common classes: a sample's label is mapped to its class name (`Dataset.class_names`,
the original digits) and from there to the column of H_j's output for that name (H_j's class
names are those of network j's training data), and the prediction is the argmax over H_j's
columns of the common classes, so chance is 1 / |common|. This is the paper's measure: "the
CIFAR-10 feature extractor with the STL-10 classification head ... accuracy on CIFAR-10 test,
on the 9 common classes". The originals (E_i then H_i) are measured the same way beside them.

Each is reported with batch-norm in running-statistics mode (eval mode) and in batch-statistics
mode (train mode over batches of the section's batch size, in a fixed seeded order, the
running statistics left as they are): the paper evaluates with batch statistics, because
statistics aggregated over one network's training are unreliable for another's extractor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from ..checks.compat import Split
from ..compiler import build_graph, subgraph
from . import functional as fn
from .procedure import first_output

MODES = ("running", "batch")


def class_names(ds) -> list[str]:
    """A data set's class names, by label index (labels stand for themselves when unnamed)."""
    names = getattr(ds, "class_names", None)
    return list(names) if names else [str(k) for k in range(ds.classes)]


def label_map(names: list[str], common: list[str]) -> torch.Tensor:
    """For each label index of a data set with these class names: the index of its class among
    the common classes, or -1 for a class that is not common."""
    return torch.tensor([common.index(n) if n in common else -1 for n in names], dtype=torch.long)


def columns(head_names: list[str], common: list[str]) -> torch.Tensor:
    """The output columns of a head (whose classes are `head_names`) for the common classes, in order."""
    return torch.tensor([head_names.index(c) for c in common], dtype=torch.long)


class Parts:
    """Graphs of pieces of the Assembly's networks, built once and cached: `piece(net, start,
    end)` runs from binding `start` (None: the input) to binding `end`. They share the
    Assembly's module instances, so they train and evaluate the very weights of the networks."""

    def __init__(self, asm):
        self.asm = asm
        self._graphs: dict[tuple, fx.GraphModule] = {}

    def piece(self, network: str, start: str | None, end: str) -> fx.GraphModule:
        key = (network, start, end)
        if key not in self._graphs:
            net = self.asm.checked.networks[network]
            cut = net.model_copy(update={"outputs": (net.bindings[end],)})
            sub = subgraph(cut, (start,) if start else tuple(net.inputs))
            self._graphs[key] = build_graph(sub, self.asm.modules).to(self.asm.device)
        return self._graphs[key]

    def extractor(self, split: Split) -> fx.GraphModule:
        return self.piece(split.network, None, split.extractor)

    def head(self, split: Split, binding: str | None = None) -> fx.GraphModule:
        """The task head of a network (or the head at `binding`), from its extractor's features."""
        return self.piece(split.network, split.extractor, binding or split.head)


class Composed(nn.Module):
    """An extractor followed by a head: logits of the head's first output."""

    def __init__(self, extractor: nn.Module, head: nn.Module):
        super().__init__()
        self.extractor, self.head = extractor, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return first_output(self.head(first_output(self.extractor(x))))


@dataclass
class Task:
    """What one network contributes: its split, its test data and its head's class names."""

    split: Split
    test: object  # assembler.data.Dataset
    head_names: list[str]


def accuracy(model: nn.Module, x: torch.Tensor, target: torch.Tensor, cols: torch.Tensor, mode: str,
             batch: int) -> float:
    """Accuracy of argmax over `cols` of the model's logits against `target` (indices into
    `cols`), batch-norm in `mode`: "running" (eval mode) or "batch" (train mode with copies of
    the buffers, so the running statistics stay as they are). Modules' modes are restored."""
    was = {m: m.training for m in model.modules()}
    model.train(mode == "batch")
    buffers = fn.buffer_copies(model) if mode == "batch" else None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = 0
    try:
        with torch.no_grad():
            for idx in torch.tensor_split(torch.arange(len(x)), max(1, -(-len(x) // batch))):
                xb = x[idx].to(device)
                logits = first_output(fn.call(model, {}, xb, buffers=buffers) if buffers is not None else model(xb))
                correct += int((logits[:, cols.to(device)].argmax(1).cpu() == target[idx]).sum())
    finally:
        for m, t in was.items():
            m.training = t
    return correct / max(1, len(x))


def common_samples(ds, common: list[str], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of the common classes in a fixed seeded order (batches then mix classes even
    when the source lists them class by class) and their labels as common-class indices."""
    mapped = label_map(class_names(ds), common)[ds.y]
    keep = torch.nonzero(mapped >= 0).flatten()
    keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))]
    return ds.x[keep], mapped[keep]


def report(parts: Parts, tasks: list[Task], common: list[str], batch: int) -> dict:
    """Recombination accuracy of every ordered pair and the originals, in both batch-norm modes:

    {"classes": [...], "chance": 1/|C|,
     "pairs": {"a.f -> b.y": {"extractor": "a", "head": "b", "samples": n, "running": .., "batch": ..}},
     "originals": {"a": {"samples": n, "running": .., "batch": ..}},
     "mean": {"running": .., "batch": ..}}    (over the pairs)"""
    out: dict = {"classes": list(common), "chance": 1.0 / len(common), "pairs": {}, "originals": {}}
    samples = [common_samples(t.test, common) for t in tasks]
    for i, ti in enumerate(tasks):
        x, target = samples[i]
        for j, tj in enumerate(tasks):
            model = Composed(parts.extractor(ti.split), parts.head(tj.split))
            cols = columns(tj.head_names, common)
            row = {"samples": len(x), **{m: accuracy(model, x, target, cols, m, batch) for m in MODES}}
            if i == j:
                out["originals"][ti.split.network] = row
            else:
                key = f"{ti.split.network}.{ti.split.extractor} -> {tj.split.network}.{tj.split.head}"
                out["pairs"][key] = {"extractor": ti.split.network, "head": tj.split.network, **row}
    if out["pairs"]:
        out["mean"] = {m: sum(p[m] for p in out["pairs"].values()) / len(out["pairs"]) for m in MODES}
    return out


def recombined_ends(asm, network: str, trained) -> tuple[str, str] | None:
    """(extractor network, head network) of a spec-declared recombination such as
    `ab(x) { y = x -> a.f -> b.y }`: an untrained network whose first module is one trained
    network's and whose output module another's; None for anything else."""
    if network in trained or network not in asm.checked.networks:
        return None
    net = asm.checked.networks[network]
    keyed = [n.module for n in net.nodes if n.module]
    out = net.node(net.outputs[0]).module if net.outputs else None
    if not keyed or out is None:
        return None
    owner = lambda key: next((t for t in trained if key.startswith(t + ".")), None)  # noqa: E731
    e, h = owner(keyed[0]), owner(out)
    return (e, h) if e and h and e != h else None


def recombined(model: nn.Module, extractor: str, head: str, test, head_names: list[str], common: list[str],
               batch: int) -> dict:
    """A spec-declared recombined network measured as the pairs are: on its extractor's test
    data, restricted to the common classes, in both batch-norm modes."""
    x, target = common_samples(test, common)
    cols = columns(head_names, common)
    return {"extractor": extractor, "head": head, "samples": len(x),
            **{m: accuracy(model, x, target, cols, m, batch) for m in MODES}}
