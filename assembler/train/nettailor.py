"""NetTailor (Morgado & Vasconcelos, CVPR 2019; paper 001): a student of frozen pre-trained
blocks plus gated low-complexity proxies is trained with

    L = CE + gamma1 * E[C] + gamma2 * Omega

then the proxies whose alpha falls below `threshold` and the k pre-trained blocks with the
smallest alpha are pruned (exclusion rules cascading), and what remains is fine-tuned
without the complexity term. Over k, the leanest network within `tolerance` of the teacher's
accuracy is kept, written as an ordinary spec.

E[C] (eq. 5-10): for every gate path pi from node i into the gate at node j,
    E[C_pi] = C_pi * (alpha_pi - P_in(i) - P_out(j))
with C_pi the path's FLOPs over the FLOPs of the network without its proxies, P_in(i) the
product of (1 - alpha) over the paths merging into node i (0 when node i is not a gate: an
input is never excluded) and P_out(j) the product of (1 - alpha) over every path that reads
node j (0 when something other than a gate path reads it, e.g. the classifier).
Omega (eq. 11): the mean over matched bindings of the element-mean squared difference between
the student's and the teacher's activations (bindings paired by name, or by `match ... : l2`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..graph import CheckedNetwork
from .procedure import Batch, Procedure, first_output
from .teacher import teacher_network


@dataclass(frozen=True)
class GatePath:
    gate: str  # module key of the gate
    binding: str  # the gated binding (node j)
    index: int  # path index in the gate
    source: str | None  # the gated binding it reads (node i), None for an input or ungated value
    cost: float  # the path's FLOPs over the network's FLOPs without proxies
    proxy: bool  # a task-specific proxy (else a pre-trained block)


def gate_paths(net: CheckedNetwork) -> list[GatePath]:
    """Every path of every gate of a network, with the binding it reads and its relative cost."""
    gates = {n.binding: n for n in net.nodes if n.op == "gate"}
    by_name = {n.name: n for n in net.nodes}
    found, proxy_flops = [], 0
    for g in gates.values():
        for i, last in enumerate(g.inputs):
            nodes, frontier, source = [], [last], None
            while frontier:
                cur = by_name[frontier.pop()]
                if cur.binding != g.binding or cur.op == "input":
                    source = cur.binding
                    continue
                nodes.append(cur)
                frontier.extend(cur.inputs)
            flops = sum(n.flops for n in nodes)
            proxy = any(n.role == "proxy" for n in nodes)
            proxy_flops += flops if proxy else 0
            found.append((g, i, source if source in gates else None, flops, proxy))
    total = max(1, sum(n.flops for n in net.nodes) - proxy_flops - sum(g.flops for g in gates.values()))
    return [GatePath(g.module, g.binding, i, src, flops / total, proxy) for g, i, src, flops, proxy in found]


class ExpectedComplexity:
    """E[C] of a network's gates as a differentiable function of their alphas."""

    def __init__(self, net: CheckedNetwork, modules: dict):
        self.paths = gate_paths(net)
        self.modules = modules
        self.gate = {p.binding: p.gate for p in self.paths}
        readers: dict[str, list[GatePath]] = {}
        for p in self.paths:
            if p.source is not None:
                readers.setdefault(p.source, []).append(p)
        # a gated binding that anything but gate paths reads (or that is an output) is never excluded
        by_name = {n.name: n for n in net.nodes}
        free = {by_name[o].binding for o in net.outputs}
        for n in net.nodes:
            for i in n.inputs:
                b = by_name[i].binding
                if b in self.gate and n.binding != b and n.binding not in self.gate:
                    free.add(b)
        self.readers = {b: ps for b, ps in readers.items() if b not in free}

    def __call__(self) -> torch.Tensor:
        alphas = {key: self.modules[key].alphas() for key in set(self.gate.values())}
        total = torch.zeros(())
        for p in self.paths:
            a = alphas[p.gate][p.index]
            p_in = torch.prod(1 - alphas[self.gate[p.source]]) if p.source is not None else 0.0
            outs = self.readers.get(p.binding)
            p_out = torch.stack([1 - alphas[r.gate][r.index] for r in outs]).prod() if outs else 0.0
            total = total + p.cost * (a - p_in - p_out)
        return total


def pruning_plan(net: CheckedNetwork, modules: dict, threshold: float, k: int) -> tuple[list[str], list[str]]:
    """What to remove: proxies with alpha < threshold, and the k pre-trained blocks (gate paths
    without proxies) with the smallest alpha, as `edits.prune` items. Returns (items, removed
    blocks)."""
    paths = gate_paths(net)
    with torch.no_grad():
        alphas = {p.gate: modules[p.gate].alphas().tolist() for p in paths}
    items = [f"{p.binding}.in{p.index}" for p in paths if p.proxy and alphas[p.gate][p.index] < threshold]
    blocks = sorted((alphas[p.gate][p.index], p.binding, p.index) for p in paths if not p.proxy)
    removed = blocks[:k]
    return items + [f"{b}.in{i}" for _, b, i in removed], [b for _, b, _ in removed]


class NetTailor(Procedure):
    name = "nettailor"
    ddp = False  # the student runs with taps (a plain graph); gradients are averaged by hand
    validation = 0.2  # k is chosen on held-out training data, never on the test data

    def __init__(self, ctx, retraining: bool = False):
        super().__init__(ctx)
        self.retraining = retraining
        self.final_metrics: dict = {}

    @property
    def student(self) -> str:
        return self.ctx.networks[0]

    def setup(self) -> None:
        a = self.ctx.args
        self.gamma1 = 0.0 if self.retraining else a["gamma1"]
        self.gamma2 = a["gamma2"]
        net = self.ctx.asm.checked.networks[self.student]
        self.complexity = ExpectedComplexity(net, self.ctx.asm.modules)
        self.teacher_name = a["teacher"]
        self.pairs = self._pairs()
        self.teacher = teacher_network(self.ctx, self.teacher_name)
        self.teacher.eval()
        self.teacher_taps = self.ctx.asm.network(self.teacher_name, [t for _, t in self.pairs]) \
            if self.teacher_name in self.ctx.asm.checked.networks else None

    def _pairs(self) -> list[tuple[str, str]]:
        """(student binding, teacher binding): declared l2 edges, else equal names and shapes."""
        asm = self.ctx.asm
        edges = [(e.target.split(".", 1)[1], e.source.split(".", 1)[1]) for e in asm.checked.edges
                 if e.weighting == "l2" and e.source.startswith(self.teacher_name + ".")
                 and e.target.startswith(self.student + ".")]
        if edges:
            return edges
        s = asm.checked.networks[self.student]
        t = asm.checked.networks.get(self.teacher_name)
        if t is None:
            return []
        return [(b, b) for b in s.bindings if b in t.bindings and b not in s.inputs
                and s.shape(b) == t.shape(b)]

    def param_groups(self) -> list[dict]:
        gates = {id(p) for k, d in self.ctx.asm.checked.modules.items() if d.op == "gate"
                 for p in self.ctx.asm.modules[k].parameters()}
        params = self.parameters()
        return [{"params": [p for p in params if id(p) not in gates]},
                {"params": [p for p in params if id(p) in gates], "weight_decay": 0.0}]

    def loss(self, batch: Batch):
        x, y = batch[0]
        taps = [s for s, _ in self.pairs]
        out, acts = self.ctx.asm.network(self.student, taps)(x) if taps else (self.ctx.model(self.student)(x), {})
        logits = first_output(out)
        ce = F.cross_entropy(logits, y)
        terms = {"ce": ce.item()}
        loss = ce
        if self.gamma1:
            ec = self.complexity()
            loss = loss + self.gamma1 * ec
            terms["complexity"] = ec.item()
        if self.gamma2 and self.pairs and self.teacher_taps is not None:
            with torch.no_grad():
                _, t_acts = self.teacher_taps(x)
            omega = torch.stack([F.mse_loss(acts[s], t_acts[t]) for s, t in self.pairs]).mean()
            loss = loss + self.gamma2 * omega
            terms["teacher"] = omega.item()
        return loss, terms, logits

    def train_modules(self):
        return [self.ctx.asm.network(self.student)]

    def finish(self, trainer) -> dict:
        if self.retraining:
            return {}
        from .tailor import tailor
        return tailor(self, trainer)
