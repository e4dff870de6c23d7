"""L2T-ww's meta-iteration: passes and time of `l2tww`'s step (a functional look-ahead with
the hypergradient by autograd through the unrolled steps) against the reference code's scheme
(alinlab/L2T-ww `MetaSGD`: real look-ahead steps that deep-copy the model, regressor and
optimizer states, then Reverse-HG by replaying each saved state with double backprop, written
below) and against a plain `finetune` step of the target, on specs/digits/l2tww.net (12 meta
edges, batch 64 as the reference). Counts target and source forward passes and autograd
backward runs per meta-iteration; checks that both schemes give the same hypergradient;
times interleaved iterations (medians of per-round ratios, process CPU time, so that other
processes on a shared machine weigh less). Goal (issue 11): the same hypergradient in fewer
passes and less time than the reference scheme.

    python benchmarks/l2tww_speed.py [--rounds 15] [--json benchmarks/results/l2tww_speed.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from assembler.allocator import steady_allocator
import assembler
from assembler.train.optim import Optimizers
from assembler.train.procedure import Stage, first_output
from assembler.train.run import ensure_trained
from assembler.train.trainer import Trainer

DIGITS = Path(__file__).resolve().parent.parent / "specs" / "digits"


class Counter:
    """Within `with Counter(proc)`: forward passes of the target and the source (module hooks)
    and autograd backward runs (torch.autograd.grad and backward, wrapped)."""

    def __init__(self, proc):
        self.proc = proc
        self.counts = {"target_forward": 0, "source_forward": 0, "backward": 0}

    def _add(self, key):
        self.counts[key] += 1

    def __enter__(self):
        sources = [self.proc.ctx.asm.network(n, t) for n, t in self.proc.features.sources.items()]
        self.hooks = [self.proc.fun.gm.register_forward_hook(lambda *a: self._add("target_forward"))]
        self.hooks += [gm.register_forward_hook(lambda *a: self._add("source_forward")) for gm in sources]
        self.saved = grad, backward = torch.autograd.grad, torch.autograd.backward

        def counted_grad(*a, **k):
            self._add("backward")
            return grad(*a, **k)

        def counted_backward(*a, **k):
            self._add("backward")
            return backward(*a, **k)

        torch.autograd.grad, torch.autograd.backward = counted_grad, counted_backward
        return self

    def __exit__(self, *exc):
        torch.autograd.grad, torch.autograd.backward = self.saved
        for h in self.hooks:
            h.remove()


def setup(batch: int, seed: int = 0):
    """The example's l2tww procedure (its Trainer, not run), its optimizers and one batch."""
    ensure_trained(DIGITS / "source.net", quiet=True)
    spec = assembler.parse((DIGITS / "l2tww.net").read_text(), str(DIGITS / "l2tww.net"))
    asm = assembler.compile(spec, seed=seed)
    trainer = Trainer(asm, asm.checked.trains[0], None, base_dir=DIGITS, quiet=True)
    proc = trainer.procedure
    proc.setup()
    trainer.ctx.stage = Stage("train", 1)
    opts = Optimizers(proc.optimizers(trainer.ctx.stage), trainer.settings, 1).torch
    ds = trainer.ctx.train_data[0]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(ds), (batch,), generator=g)
    proc.fun.gm.train()
    return proc, opts, [(ds.x[idx], ds.y[idx])]


class Replay:
    """The reference's meta-iteration on the same modules: one real step on CE + L_wfm; T
    recorded steps on L_wfm and one on CE (each deep-copies the model, regressor and optimizer
    states first); CE at the end backpropagated; `meta_backward` (from the last recorded state:
    reload it, recompute its loss, grad with create_graph, X = sum g * (-lr a0 + a1),
    X.backward() for the Hessian-vector product and the meta-gradient, carry the adjoints);
    rollback to the first recorded state; one Adam step."""

    def __init__(self, proc, opts):
        self.proc, self.model, self.meta = proc, opts["model"], opts["meta"]
        self.params = list(proc.fun.named.values())
        self.phi = [p for g in self.meta.param_groups for p in g["params"]]
        self.modules = [proc.fun.gm] + [e for _, e in proc.fun.edges] + [self.model]

    def get_state(self):
        return copy.deepcopy([m.state_dict() for m in self.modules])

    def set_state(self, state):
        for m, s in zip(self.modules, state):
            m.load_state_dict(s)

    def objectives(self, x, y):
        proc, beta = self.proc, self.proc.ctx.args["beta"]

        def inner(matching_only=False):
            sources = proc.features.source_features(x)  # the reference runs the source every time
            out, acts = proc.fun.gm(x)
            match = beta * proc.fun.matching(None, sources, acts)
            return match if matching_only else F.cross_entropy(first_output(out), y) + match

        def outer():
            return F.cross_entropy(first_output(proc.fun.gm(x)[0]), y)

        return inner, outer

    def sgd_step(self, objective):
        self.model.zero_grad(set_to_none=True)
        objective().backward()
        for p in self.params:  # old torch's zero_grad: every parameter steps, with a zero gradient if unused
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.model.step()

    def step(self, batch):
        x, y = batch[0]
        inner, outer = self.objectives(x, y)
        self.sgd_step(inner)
        recorded = []
        for t in range(self.proc.ctx.args["inner_steps"] + 1):
            objective = (lambda: inner(True)) if t < self.proc.ctx.args["inner_steps"] else outer
            recorded.append((self.get_state(), objective))
            self.sgd_step(objective)
        self.model.zero_grad(set_to_none=True)
        self.meta.zero_grad(set_to_none=True)
        outer().backward()
        self.meta_backward(recorded)
        self.meta.step()

    def meta_backward(self, recorded):
        group = self.model.param_groups[0]
        lr, wd, m = group["lr"], group["weight_decay"], group["momentum"]
        a0 = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in self.params]
        a1 = [torch.zeros_like(p) for p in self.params]
        self.get_state()  # the reference copies the current state too (kept when rollback is off)
        for p in self.phi:
            p.grad = torch.zeros_like(p)
        for state, objective in reversed(recorded):
            self.set_state(state)
            grads = torch.autograd.grad(objective(), self.params, create_graph=True, allow_unused=True)
            x = sum((g * (-lr * u + v)).sum() for g, u, v in zip(grads, a0, a1) if g is not None)
            for p in self.params:
                p.grad = None
            x.backward()
            hvp = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
            a0, a1 = ([u * (1 - lr * wd) + wd * v + h for u, v, h in zip(a0, a1, hvp)],
                      [m * v - lr * m * u for u, v in zip(a0, a1)])
        # rollback: the model stays at the first recorded state (step 1's result)


def matching_step(proc, opt, batch):
    """A real step on CE + beta * the same 12 edges with fixed meta-networks (`matching`'s step)."""
    x, y = batch[0]
    opt.zero_grad(set_to_none=True)
    sources = proc.features.source_features(x)
    out, acts = proc.fun.gm(x)
    (F.cross_entropy(first_output(out), y) + proc.ctx.args["beta"] * proc.fun.matching(None, sources, acts)).backward()
    opt.step()


def finetune_step(gm, opt, batch):
    x, y = batch[0]
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(first_output(gm(x)), y).backward()
    opt.step()


def same_hypergradient(batch_size: int) -> float:
    """Largest |ours - replay| over the largest |replay| of the meta-gradient at one state."""
    got = []
    for scheme in ("ours", "replay"):
        proc, opts, batch = setup(batch_size)
        captured = []
        meta = opts["meta"]
        original = meta.step
        meta.step = lambda *a, **k: captured.append([p.grad.clone() for g in meta.param_groups for p in g["params"]])
        if scheme == "ours":
            proc.step(batch, opts)
        else:
            Replay(proc, opts).step(batch)
        meta.step = original
        got.append(torch.cat([g.flatten() for g in captured[0]]))
    return ((got[0] - got[1]).abs().max() / got[1].abs().max()).item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/l2tww_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    steady_allocator()  # glibc's adaptive thresholds make batch-256 timings vary (assembler.allocator)
    rel = same_hypergradient(args.batch)
    ours_proc, ours_opts, batch = setup(args.batch)
    rep_proc, rep_opts, _ = setup(args.batch)
    replay = Replay(rep_proc, rep_opts)
    ft_proc, ft_opts, _ = setup(args.batch)
    ft_gm = ft_proc.ctx.asm.network("tgt")
    ft_opt = torch.optim.SGD(ft_gm.parameters(), lr=0.05, momentum=0.9)
    ft_gm.train()
    fm_proc, fm_opts, _ = setup(args.batch)
    schemes = {"l2tww": lambda: ours_proc.step(batch, ours_opts), "replay": lambda: replay.step(batch),
               "matching": lambda: matching_step(fm_proc, fm_opts["model"], batch),
               "finetune": lambda: finetune_step(ft_gm, ft_opt, batch)}
    passes = {}
    for name, proc in (("l2tww", ours_proc), ("replay", rep_proc)):
        schemes[name]()
        with Counter(proc) as counter:
            schemes[name]()
        passes[name] = counter.counts
    for f in schemes.values():  # warm up
        f()
    times = {k: [] for k in schemes}
    for _ in range(args.rounds):
        for name, f in schemes.items():
            t = time.process_time()
            f()
            times[name].append(time.process_time() - t)
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
    result = {"batch": args.batch, "rounds": args.rounds, "hypergradient_relative_difference": rel,
              "passes": passes, "median_seconds": {k: statistics.median(v) for k, v in times.items()},
              "ratio_l2tww_over_replay": ratio("l2tww", "replay"), "ratio_l2tww_over_finetune": ratio("l2tww", "finetune"),
              "ratio_replay_over_finetune": ratio("replay", "finetune"),
              "ratio_matching_over_finetune": ratio("matching", "finetune")}
    print(f"hypergradient: max |l2tww - replay| / max |replay| = {rel:.2e}\n")
    print("| scheme | target forwards | source forwards | backward runs | passes in all | CPU ms / iteration | x finetune step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ("l2tww", "replay"):
        c = passes[name]
        print(f"| {name} | {c['target_forward']} | {c['source_forward']} | {c['backward']} | {sum(c.values())} | "
              f"{result['median_seconds'][name] * 1000:.1f} | {ratio(name, 'finetune'):.1f} |")
    print(f"| matching step (same 12 edges, no meta-update) | 1 | 1 | 1 | 3 | "
          f"{result['median_seconds']['matching'] * 1000:.1f} | {ratio('matching', 'finetune'):.1f} |")
    print(f"| finetune step | 1 | 0 | 1 | 2 | {result['median_seconds']['finetune'] * 1000:.1f} | 1.0 |")
    print(f"\nl2tww / replay time: {result['ratio_l2tww_over_replay']:.2f} (median of {args.rounds} interleaved rounds)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
