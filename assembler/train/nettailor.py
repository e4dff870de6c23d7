"""NetTailor (Morgado & Vasconcelos, CVPR 2019; paper 001): a student of frozen pre-trained
blocks plus gated low-complexity proxies is trained with

    L = CE + gamma1 * E[C] + gamma2 * Omega

then the proxies whose alpha falls below `threshold` and the k pre-trained blocks with the
smallest alpha are pruned (exclusion rules cascading), and what remains is fine-tuned
without the complexity term. Over k, the leanest network (`cost="flops"`; `"latency"`: the
fastest, measured) whose held-out accuracy is within `tolerance` of the teacher's is kept,
written as an ordinary spec. The held-out share is the
section's `validation` share (the teacher's section holds the same samples out: same data and seed).

E[C] (eq. 5-10): for every gate path pi from node i into the gate at node j,
    E[C_pi] = C_pi * (alpha_pi - P_in(i) - P_out(j))
with C_pi the path's FLOPs over the FLOPs of the network without its proxies, P_in(i) the
product of (1 - alpha) over the paths merging into node i (0 when node i is not a gate: an
input is never excluded) and P_out(j) the product of (1 - alpha) over every path that reads
node j (0 when something other than a gate path reads it, e.g. the classifier).

Omega (eq. 11, as the reference code computes it): over the pairs of student and teacher
bindings (`match ... : l2` edges, else equal names and shapes), the element-mean squared
difference, summed and divided by L, the number of pairs inside the network. With
`omega="local"` (the default, as the reference) each internal student binding is computed
again from the detached values of the bindings it reads, so its term trains only its own
gate and proxies; an output (the logits) is compared as the whole student computes it.
`omega="global"`: every pair as the whole student computes it.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ..assemble import compile as compile_spec
from ..checkpoint import attach_imports
from ..checks.nettailor import teacher_pairs
from ..errors import Diagnostic, SpecError, place
from ..graph import CheckedNetwork, GatePath, gate_paths
from ..parser import parse
from ..settings import held_out_source
from ..printer import format_spec
from ..resolve import expand
from .evaluation import evaluate
from .procedure import Batch, Optim, Outcome, Procedure, Stage, Step, first_output
from .tailor import Latency, choose, path_costs, prune_assembly, removable_blocks, slower_note, table
from .teacher import teacher_network


class ExpectedComplexity:
    """E[C] of a network's gates as a differentiable function of their alphas."""

    def __init__(self, net: CheckedNetwork, modules: dict):
        self.paths = gate_paths(net)
        self.cost = path_costs(net, self.paths)
        self.modules = modules
        self.gate = {p.gate.binding: p.gate.module for p in self.paths}
        # the gated binding a path reads (node i), None for an input or an ungated value
        self.source = [p.sources[-1] if p.sources and p.sources[-1] in self.gate else None for p in self.paths]
        readers: dict[str, list[GatePath]] = {}
        for p, source in zip(self.paths, self.source):
            if source is not None:
                readers.setdefault(source, []).append(p)
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
        for p, cost, source in zip(self.paths, self.cost, self.source):
            a = alphas[p.gate.module][p.index]
            p_in = torch.prod(1 - alphas[self.gate[source]]) if source is not None else 0.0
            outs = self.readers.get(p.gate.binding)
            p_out = torch.stack([1 - alphas[r.gate.module][r.index] for r in outs]).prod() if outs else 0.0
            total = total + cost * (a - p_in - p_out)
        return total


class TeacherTerm:
    """Omega for one stage's student: `(student outputs, its taps) -> (Omega, first output)`."""

    def __init__(self, asm, student: str, pairs: list[tuple[str, str]], layers: int, local: bool):
        net = asm.checked.networks[student]
        self.pairs = [(s, t) for s, t in pairs if s in net.bindings]
        self.layers = layers
        outputs = {net.node(o).binding for o in net.outputs}
        self.local = {}  # internal student binding -> (the bindings it reads, its sub-graph)
        if local:
            for s, _ in self.pairs:
                if s not in outputs:
                    reads = _reads(net, s)
                    self.local[s] = (reads, asm.network(student, start=reads, end=[s]))
        self.taps = list(dict.fromkeys([s for s, _ in self.pairs] + [r for reads, _ in self.local.values()
                                                                      for r in reads]))

    def __call__(self, acts: dict, teacher_acts: dict) -> torch.Tensor:
        total = 0.0
        for s, t in self.pairs:
            if s in self.local:
                reads, layer = self.local[s]
                value = layer(*(acts[r].detach() for r in reads))
            else:
                value = acts[s]
            total = total + F.mse_loss(value, teacher_acts[t])
        return total / self.layers


def _reads(net: CheckedNetwork, binding: str) -> list[str]:
    """The other bindings (and inputs) whose values a binding's nodes read, in network order."""
    found = {net.node(i).binding for n in net.nodes_of(binding) for i in n.inputs} - {binding}
    order = {n.binding: k for k, n in enumerate(net.nodes)}
    return sorted(found, key=order.__getitem__)


class NetTailor(Procedure):
    """Stage "train": the student with CE + gamma1 E[C] + gamma2 Omega. Then one stage per k,
    "retrain-kK": the student pruned of proxies below `threshold` and its k weakest pre-trained
    blocks, fine-tuned with gamma1 = 0. Each stage checkpoints and resumes; the state keeps the
    trained student, the rows and the best candidates so far."""

    name = "nettailor"
    ddp = False  # the student runs with taps (a plain graph); gradients are averaged by hand
    def __init__(self, ctx):
        super().__init__(ctx)
        self.base = ctx.asm  # the untailored student's Assembly
        self.snapshot: dict | None = None  # its weights after the "train" stage
        self.reference: dict = {}
        self.rows: list[dict] = []
        self.best: dict[str, dict] = {}  # "chosen": the candidate row with spec text and tensors

    @property
    def student(self) -> str:
        return self.ctx.networks[0]

    def stages(self) -> list[Stage]:
        a, s = self.ctx.args, self.ctx.settings
        retrain = a.get("retrain_epochs") or s["epochs"]
        return [Stage("train", s["epochs"])] + [Stage(f"retrain-k{k}", retrain) for k in self._ks()]

    def _ks(self) -> list[int]:
        n = removable_blocks(self.base.checked.networks[self.student])
        ks = self.ctx.args.get("blocks") or list(range(n + 1))
        if max(ks) > n:
            span = next((t.spans.get("procedure") for t in self.base.checked.trains if self.student in t.networks),
                        None)
            where = place(span, self.base.checked.filename)
            raise SpecError(Diagnostic(f"nettailor: blocks lists k={max(ks)}, but '{self.student}' has only {n} "
                                       "removable pre-trained block(s)", *where, hint=f"give numbers from 0 to {n}"))
        return ks

    def setup(self) -> None:
        self.teacher_name = self.ctx.args["teacher"]
        teacher_net = _checked_network(self.base, self.teacher_name)
        self.pairs = teacher_pairs(self.student, self.base.checked.networks[self.student], self.teacher_name,
                                   teacher_net, self.base.checked.edges)
        if self.ctx.args["gamma2"] > 0 and not self.pairs:  # `check` reports it; an Assembly built by hand too
            raise SpecError.at(f"nettailor: the teacher '{self.teacher_name}' shares no binding with "
                               f"'{self.student}': the teacher term would be empty", None)
        outputs = {self.base.checked.networks[self.student].node(o).binding
                   for o in self.base.checked.networks[self.student].outputs}
        self.layers = max(1, sum(s not in outputs for s, _ in self.pairs))  # L, the reference's 16
        self.teacher = teacher_network(self.ctx, self.teacher_name)
        self.teacher_taps = teacher_network(self.ctx, self.teacher_name, sorted({t for _, t in self.pairs}))
        self.latency = Latency(self.teacher, self.base.checked.networks[self.student].inputs) \
            if self.ctx.args.get("latency", True) else None

    # -- stages ----------------------------------------------------------------------------------

    def enter(self, stage: Stage):
        if stage.name == "train":
            return self._prepare(self.base, self.ctx.args["gamma1"])
        if self.snapshot is not None:  # a resumed run: the trained student again
            _load(self.base, self.snapshot)
        k = int(stage.name[len("retrain-k"):])
        try:
            asm, removed, items = prune_assembly(self.base, self.student, self.ctx.args["threshold"], k,
                                                 self.ctx.settings["seed"])
        except SpecError as e:
            self._record({"k": k, "skipped": e.message})
            return None
        self.candidate = {"k": k, "removed_blocks": removed, "removed_proxies": len(items) - len(removed)}
        return self._prepare(asm, 0.0)

    def _prepare(self, asm, gamma1: float):
        self.ctx.asm = asm
        self.gamma1, self.gamma2 = gamma1, self.ctx.args["gamma2"]
        self.complexity = ExpectedComplexity(asm.checked.networks[self.student], asm.modules)
        self.term = TeacherTerm(asm, self.student, self.pairs, self.layers, self.ctx.args["omega"] == "local")
        return asm

    def exit(self, stage: Stage) -> None:
        if stage.name == "train":
            self.snapshot = {k: v.detach().clone() for k, v in self.base.state().items()}
            self._references()
            return
        self._candidate(self.ctx.asm)

    def _references(self) -> None:
        """The teacher's and the untailored student's accuracy on the held-out share and the
        test data; k is chosen against the teacher's held-out accuracy."""
        val, test, net = self.ctx.val_data, self.ctx.test_data[0], self.student
        student = self.base.network(net)
        self.reference = {
            "teacher_val_accuracy": evaluate(self.teacher, val)["accuracy"],
            "teacher_accuracy": evaluate(self.teacher, test)["accuracy"] if test is not None else None,
            "student_val_accuracy": evaluate(student, val)["accuracy"],
            "student_test_accuracy": evaluate(student, test)["accuracy"] if test is not None else None,
            "student_params": self.base.checked.params(net), "student_flops": self.base.checked.flops(net),
            "teacher_flops": _flops(self.base, self.teacher_name),
            "held_out": len(val), "validation": self.ctx.settings.get("validation", 0.0), "cost": self.ctx.args["cost"],
            "teacher_held_out": self._teacher_held_out(), "tolerance": self.ctx.args["tolerance"],
            "student_latency": self.latency(student) if self.latency else None}
        if self.reference["teacher_held_out"] is not True and not self.ctx.quiet:
            print(f"warning: nettailor: {self.reference['teacher_held_out']}", file=sys.stderr)

    def _teacher_held_out(self):
        """True when the teacher's own section held out the same samples (same data, seed and
        share), else why its held-out accuracy may be optimistic."""
        trains, name = _sections_of(self.base, self.teacher_name)
        mine = self.ctx.settings
        share = mine.get("validation", 0.0)
        for t in trains:
            if name not in t.networks:
                continue
            theirs = t.settings
            their_share = theirs.get("validation", 0.0)  # filled in by `check` (passes._held_out_shares)
            if (held_out_source(theirs), their_share) == (held_out_source(mine), share):
                return True
            return (f"the teacher's section does not hold out the same samples (its data, seed or validation share "
                    f"differ: {their_share} vs {share}), so its held-out accuracy, which k is chosen "
                    "against, was measured on samples it trained on; give both sections the same validation share")
        return (f"no train section of '{self.teacher_name}' was found: nothing says it did not train on the "
                "held-out samples")

    def _candidate(self, asm) -> None:
        net, test, val = self.student, self.ctx.test_data[0], self.ctx.val_data
        gm = asm.network(net)
        row = {**self.candidate, "params": asm.checked.params(net), "flops": asm.checked.flops(net),
               "accuracy": evaluate(gm, val)["accuracy"],
               "test_accuracy": evaluate(gm, test)["accuracy"] if test is not None else None,
               "latency": self.latency(gm) if self.latency else None}
        self._record(row)
        spec = format_spec(expand(asm.spec).model_copy(update={"comments": ()}))
        kept = {"row": row, "spec": spec, "filename": asm.spec.filename,
                "tensors": {k: v.detach().clone() for k, v in asm.state().items()}}
        rivals = [row] + ([self.best["chosen"]["row"]] if "chosen" in self.best else [])
        if choose(rivals, self.reference["teacher_val_accuracy"], self.ctx.args["tolerance"],
                  self.ctx.args["cost"]) is row:
            self.best["chosen"] = kept

    def _record(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r["k"] != row["k"]] + [row]

    def finish(self) -> Outcome:
        chosen = self.best.get("chosen")
        if chosen is None:
            raise SpecError.at("nettailor: no pruning left a valid network", None)
        spec = parse(chosen["spec"], chosen["filename"])
        asm = compile_spec(spec, seed=self.ctx.settings["seed"], imports=False)
        attach_imports(asm, reuse=self.base.imports)
        _load(asm, chosen["tensors"])
        row = chosen["row"]
        summary = {**self.reference, "tailor": sorted(self.rows, key=lambda r: r["k"]), "chosen_k": row["k"],
                   "val_accuracy": row["accuracy"], "test_accuracy": row["test_accuracy"], "params": row["params"],
                   "flops": row["flops"], "latency": row["latency"]}
        note = slower_note(summary)
        if note:
            summary["slower_than_teacher"] = note
        if not self.ctx.quiet:
            print(table(summary), file=sys.stderr)
        return Outcome(asm, summary)

    def state_dict(self) -> dict:
        return {"snapshot": self.snapshot, "reference": self.reference, "rows": self.rows, "best": self.best,
                "candidate": getattr(self, "candidate", None)}

    def load_state_dict(self, state: dict) -> None:
        self.snapshot = state.get("snapshot")
        self.reference = state.get("reference") or {}
        self.rows = list(state.get("rows") or [])
        self.best = state.get("best") or {}
        if state.get("candidate"):
            self.candidate = state["candidate"]

    # -- the loss --------------------------------------------------------------------------------

    def optimizers(self, stage: Stage) -> dict[str, Optim]:
        gates = {id(p) for k, d in self.ctx.asm.checked.modules.items() if d.role == "gate"
                 for p in self.ctx.asm.modules[k].parameters()}
        params = self.parameters(stage)
        return {"model": Optim([{"params": [p for p in params if id(p) not in gates]},
                                {"params": [p for p in params if id(p) in gates], "weight_decay": 0.0}])}

    def loss(self, batch: Batch) -> Step:
        x, y = batch[0]
        teach = bool(self.gamma2 and self.term.pairs)
        if teach:
            out, acts = self.ctx.asm.network(self.student, self.term.taps)(x)
        else:
            out, acts = self.ctx.model(self.student)(x), {}
        logits = first_output(out)
        ce = F.cross_entropy(logits, y)
        terms = {"ce": ce.item()}
        loss = ce
        if self.gamma1:
            ec = self.complexity()
            loss = loss + self.gamma1 * ec
            terms["complexity"] = ec.item()
        if teach:
            with torch.no_grad():
                _, t_acts = self.teacher_taps(x)
            omega = self.term(acts, t_acts)
            loss = loss + self.gamma2 * omega
            terms["teacher"] = omega.item()
        return Step(loss, terms, {self.student: logits})

    def train_modules(self):
        return [self.ctx.asm.network(self.student)]


def _checked_network(asm, name: str) -> CheckedNetwork | None:
    """The checked network a teacher name designates (`Assembly.checked_network`), or None."""
    try:
        return asm.checked_network(name)
    except KeyError:
        return None


def _sections_of(asm, name: str) -> tuple[tuple, str]:
    """The train sections of the spec that defines network `name`, and its name there."""
    if name in asm.checked.networks:
        return asm.checked.trains, name
    alias, _, rest = name.partition(".")
    sub = asm.imports.get(alias)
    if sub is None:
        return (), name
    return sub.checked.trains, rest or next(iter(sub.checked.networks), "")


def _flops(asm, name: str) -> int:
    net = _checked_network(asm, name)
    return sum(n.flops for n in net.nodes) if net is not None else 0


def _load(asm, tensors: dict) -> None:
    with torch.no_grad():
        for key, t in asm.state().items():
            t.copy_(tensors[key])
