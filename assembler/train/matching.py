"""`matching`: the task loss plus `beta` times the matching edges into the trained network
(`match ... : fitnet | attention | l2 | meta`), with fixed weights: the FitNets / attention
transfer baselines (FM, AT) of L2T-ww (paper 003). The edges' trainable parts (fitnet
regressors) train with the network; meta-networks, if any, stay as they are.

The sources of the edges (an imported or same-file network) run in eval mode under no_grad,
once per batch for all their tapped bindings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .procedure import Batch, Procedure, Step, first_output


def endpoint(asm, dotted: str) -> tuple[str, str]:
    """(network, binding) of a match endpoint: `net.b`, `alias.b` (a file with one network) or
    `alias.net.b`; the network as `asm.network` takes it."""
    parts = dotted.split(".")
    if parts[0] in asm.checked.networks or len(parts) == 2:
        return parts[0], parts[1]
    return f"{parts[0]}.{parts[1]}", parts[2]


class EdgeFeatures:
    """The (source, target) feature pairs of the matching edges into one network."""

    def __init__(self, asm, network: str):
        self.asm, self.network = asm, network
        self.edges = [(i, e) for i, e in enumerate(asm.checked.edges) if e.target.split(".", 1)[0] == network]
        self.sources: dict[str, list[str]] = {}
        for _, e in self.edges:
            net, binding = endpoint(asm, e.source)
            self.sources.setdefault(net, [])
            if binding not in self.sources[net]:
                self.sources[net].append(binding)
        self.targets = list(dict.fromkeys(endpoint(asm, e.target)[1] for _, e in self.edges))

    def source_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tapped source binding, `net.binding` -> value, from frozen eval-mode passes."""
        out = {}
        with torch.no_grad():
            for net, taps in self.sources.items():
                gm = self.asm.network(net, taps)
                was = gm.training
                gm.eval()
                _, acts = gm(x)
                gm.train(was)
                out.update({f"{net}.{b}": v for b, v in acts.items()})
        return out

    def pairs(self, sources: dict, targets: dict) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(edge index, S_m, T_n) of every edge."""
        out = []
        for i, e in self.edges:
            net, b = endpoint(self.asm, e.source)
            out.append((i, sources[f"{net}.{b}"], targets[endpoint(self.asm, e.target)[1]]))
        return out


class Matching(Procedure):
    name = "matching"
    ddp = False  # the network runs with taps (a plain graph); gradients are averaged by hand
    uses_edges = True  # fitnet regressors train with the network

    def setup(self) -> None:
        self.features = EdgeFeatures(self.ctx.asm, self.networks()[0])

    def loss(self, batch: Batch) -> Step:
        x, y = batch[0]
        name = self.networks()[0]
        out, acts = self.ctx.asm.network(name, self.features.targets)(x)
        logits = first_output(out)
        ce = F.cross_entropy(logits, y)
        terms, loss = {"ce": ce.item()}, ce
        pairs = self.features.pairs(self.features.source_features(x), acts)
        if pairs:
            match = sum(self.ctx.asm.edges[i](s, t).mean() for i, s, t in pairs)
            loss = loss + self.ctx.args["beta"] * match
            terms["matching"] = match.item()
        return Step(loss, terms, {name: logits})
