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

import sys

import torch
import torch.nn.functional as F

from ..assemble import compile as compile_spec
from ..checkpoint import attach_imports
from ..errors import SpecError
from ..parser import parse
from ..printer import format_spec
from ..resolve import expand
from .evaluation import evaluate
from .procedure import Batch, Optim, Outcome, Procedure, Stage, Step, first_output
from .tailor import choose, gate_paths, prune_assembly, removable_blocks, table
from .teacher import teacher_network


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


class NetTailor(Procedure):
    """Stage "train": the student with CE + gamma1 E[C] + gamma2 Omega. Then one stage per k,
    "retrain-kK": the student pruned of proxies below `threshold` and its k weakest pre-trained
    blocks, fine-tuned with gamma1 = 0. Each stage checkpoints and resumes; the state keeps the
    trained student, the rows and the best candidates so far."""

    name = "nettailor"
    ddp = False  # the student runs with taps (a plain graph); gradients are averaged by hand
    validation = 0.2  # k is chosen on held-out training data, never on the test data

    def __init__(self, ctx):
        super().__init__(ctx)
        self.base = ctx.asm  # the untailored student's Assembly
        self.snapshot: dict | None = None  # its weights after the "train" stage
        self.reference: dict = {}
        self.rows: list[dict] = []
        self.best: dict[str, dict] = {}  # "good" / "any": candidate rows with spec text and tensors

    @property
    def student(self) -> str:
        return self.ctx.networks[0]

    def stages(self) -> list[Stage]:
        a, s = self.ctx.args, self.ctx.settings
        retrain = a.get("retrain_epochs") or s["epochs"]
        return [Stage("train", s["epochs"])] + [Stage(f"retrain-k{k}", retrain) for k in self._ks()]

    def _ks(self) -> list[int]:
        n = removable_blocks(self.base.checked.networks[self.student])
        return [k for k in (self.ctx.args.get("blocks") or range(n + 1)) if k <= n]

    def setup(self) -> None:
        self.teacher_name = self.ctx.args["teacher"]
        self.teacher = teacher_network(self.ctx, self.teacher_name)

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
        self.pairs = self._pairs(asm)
        same_file = self.teacher_name in asm.checked.networks
        self.teacher_taps = asm.network(self.teacher_name, [t for _, t in self.pairs]) if same_file else None
        return asm

    def exit(self, stage: Stage) -> None:
        if stage.name == "train":
            self.snapshot = {k: v.detach().clone() for k, v in self.base.state().items()}
            self._references()
            return
        self._candidate(self.ctx.asm)

    def _references(self) -> None:
        """The reference accuracy on held-out data: the lower of the teacher's and the untailored
        student's, since the teacher usually trained on those samples."""
        val, test = self.ctx.val_data, self.ctx.test_data[0]
        t, s = evaluate(self.teacher, val)["accuracy"], evaluate(self.base.network(self.student), val)["accuracy"]
        net = self.student
        self.reference = {"teacher_accuracy": evaluate(self.teacher, test)["accuracy"] if test is not None else None,
                          "teacher_val_accuracy": t, "student_val_accuracy": s, "reference_accuracy": min(t, s),
                          "student_params": self.base.checked.params(net), "student_flops": self.base.checked.flops(net)}

    def _candidate(self, asm) -> None:
        net, test = self.student, self.ctx.test_data[0]
        row = {**self.candidate, "params": asm.checked.params(net), "flops": asm.checked.flops(net),
               "accuracy": evaluate(asm.network(net), self.ctx.val_data)["accuracy"],
               "test_accuracy": evaluate(asm.network(net), test)["accuracy"] if test is not None else None}
        self._record(row)
        spec = format_spec(expand(asm.spec).model_copy(update={"comments": ()}))
        kept = {"row": row, "spec": spec, "filename": asm.spec.filename,
                "tensors": {k: v.detach().clone() for k, v in asm.state().items()}}
        rivals = [row] + ([self.best["chosen"]["row"]] if "chosen" in self.best else [])
        if choose(rivals, self.reference["reference_accuracy"], self.ctx.args["tolerance"]) is row:
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
                   "flops": row["flops"]}
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

    def _pairs(self, asm) -> list[tuple[str, str]]:
        """(student binding, teacher binding): declared l2 edges, else equal names and shapes."""
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

    def optimizers(self, stage: Stage) -> dict[str, Optim]:
        gates = {id(p) for k, d in self.ctx.asm.checked.modules.items() if d.op == "gate"
                 for p in self.ctx.asm.modules[k].parameters()}
        params = self.parameters(stage)
        return {"model": Optim([{"params": [p for p in params if id(p) not in gates]},
                                {"params": [p for p in params if id(p) in gates], "weight_decay": 0.0}])}

    def loss(self, batch: Batch) -> Step:
        x, y = batch[0]
        taps = [s for s, _ in self.pairs]
        student = self.ctx.asm.network(self.student, taps)
        out, acts = student(x) if taps else (self.ctx.model(self.student)(x), {})
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
        return Step(loss, terms, {self.student: logits})

    def train_modules(self):
        return [self.ctx.asm.network(self.student)]


def _load(asm, tensors: dict) -> None:
    with torch.no_grad():
        for key, t in asm.state().items():
            t.copy_(tensors[key])
