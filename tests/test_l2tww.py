"""L2T-ww (issue 11): the meta edge's loss against a hand-written formula; the hypergradient of
the look-ahead against central finite differences and against the reference code's replay
scheme (saved states + double backprop, reverse mode, written here); the look-ahead discarded;
the frozen source untouched; located errors; the example trains, is interrupted by a real
SIGINT, resumes bit-identically, `show` prints each edge's learned lambda and `graph` draws it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import assembler
from conftest import assembler_cmd, run
from assembler.errors import CheckError, SpecError
from assembler.matching import FitNetEdge, MetaEdge
from assembler.train import functional as fn
from assembler.train.l2tww import L2TWW, Functional, hypergradient, sgd_groups
from assembler.train.matching import EdgeFeatures
from assembler.train.optim import Optimizers
from assembler.train.procedure import Context, Stage, first_output
from assembler.train.trainer import Trainer, resolved_settings

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "specs" / "digits"

# A frozen same-file source (batch norm: running statistics would move if it ran in train mode),
# a target with batch norm; sizes differ both ways (s1 8x8 -> b2 4x4, s2 4x4 -> b1 8x8).
TINY = """\
network src(x: [1, 8, 8]) {
    s1 = x -> conv(4, 3, pad=1) -> batchnorm -> relu
    s2 = s1 -> conv(6, 3, pad=1) -> relu -> maxpool(2)
    y = s2 -> gap -> linear(3)
    return y
}

network tgt(x: [1, 8, 8]) {
    b1 = x -> conv(3, 3, pad=1) -> batchnorm -> relu
    b2 = b1 -> conv(5, 3, pad=1) -> relu -> maxpool(2)
    logits = b2 -> gap -> linear(5)
    return logits
}

match [src.s1, src.s2] * [tgt.b1, tgt.b2] : meta
match src.s2 -> tgt.b2 : meta(where=false)

train tgt {
    procedure = l2tww(beta=0.5, inner_steps=2, meta_lr=0.01)
    data = digits(classes=[5, 6, 7, 8, 9], per_class=6)
    optimizer = sgd(lr=0.1, momentum=0.9, weight_decay=0.001)
    epochs = 2
    batch = 10
}
"""

LR, MOMENTUM, WD, BETA, T = 0.1, 0.9, 1e-3, 0.5, 2


def tiny(dtype=torch.float64, seed=0):
    """The compiled tiny spec, its meta-parameters moved off their initial values (so that
    w is not uniform), in `dtype`; a batch of random inputs and labels."""
    asm = assembler.compile(assembler.parse(TINY, "tiny.net"), imports=False, seed=seed)
    for m in asm.modules.values():
        m.to(dtype)
    asm.edges.to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in asm.meta_parameters("tgt").values():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    x = torch.rand(12, 1, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 5, (12,), generator=g)
    return asm, x, y


class Problem:
    """The tiny target's losses on one batch, computed with its real modules (for the oracles)
    or with substituted parameters (for `hypergradient`)."""

    def __init__(self, asm, x, y):
        self.asm, self.x, self.y = asm, x, y
        self.features = EdgeFeatures(asm, "tgt")
        self.fun = Functional(asm, "tgt", self.features)
        self.sources = self.features.source_features(x)
        self.named = self.fun.named
        self.phi = list(asm.meta_parameters("tgt").values())
        self.fun.gm.train()

    def inner(self):  # beta * L_wfm with the real modules
        out, acts = self.fun.gm(self.x)
        return BETA * self.fun.matching(None, self.sources, acts)

    def outer(self):
        return F.cross_entropy(first_output(self.fun.gm(self.x)[0]), self.y)

    def real_step(self, opt):
        """Algorithm 1's first step: SGD on CE + beta * L_wfm (one forward pass)."""
        opt.zero_grad(set_to_none=True)
        out, acts = self.fun.gm(self.x)
        ce = F.cross_entropy(first_output(out), self.y)
        (ce + BETA * self.fun.matching(None, self.sources, acts)).backward()
        opt.step()

    def modules(self):
        return [self.fun.gm] + [e for _, e in self.fun.edges]

    def state(self, opt):
        return copy.deepcopy(([m.state_dict() for m in self.modules()], opt.state_dict()))

    def load(self, state, opt):
        for m, s in zip(self.modules(), state[0]):
            m.load_state_dict(s)
        opt.load_state_dict(copy.deepcopy(state[1]))

    def torch_step(self, objective, opt):
        """A real torch SGD step; a gradient that does not reach a parameter is zero (so
        momentum and weight decay move it, as in the reference's old-torch zero_grad)."""
        opt.zero_grad(set_to_none=True)
        objective().backward()
        for p in self.named.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        opt.step()


def optimizer(named):
    return torch.optim.SGD(list(named.values()), lr=LR, momentum=MOMENTUM, weight_decay=WD)


def ours(prob, opt):
    """The hypergradient as the procedure computes it: the unrolled functional look-ahead."""
    buffers = fn.buffer_copies(prob.fun.gm)

    def inner(params):
        return BETA * prob.fun.matching(params, prob.sources, prob.fun.forward(params, prob.x, buffers)[1])

    def outer(params):
        return F.cross_entropy(prob.fun.forward(params, prob.x, buffers)[0], prob.y)

    grads, _ = hypergradient(fn.detached(prob.named), fn.momentum_buffers(opt, prob.named),
                             sgd_groups(opt, prob.named), inner, outer, prob.phi, T)
    return grads


def lookahead_ce(prob, opt):
    """CE after T real torch SGD steps on beta * L_wfm and one on CE; every state restored."""
    saved = prob.state(opt)
    for t in range(T + 1):
        prob.torch_step(prob.inner if t < T else prob.outer, opt)
    with torch.no_grad():
        value = prob.outer().item()
    prob.load(saved, opt)
    return value


def replay(prob, opt):
    """The reference code's scheme (MetaSGD.meta_backward, Reverse-HG): record the states before
    each look-ahead step, take the steps, backprop CE at the end, then for each recorded step
    from the last: reload its state, recompute its loss, and with double backprop form the
    Hessian-vector product that carries the adjoints (a0 of the weights, a1 of the momentum)
    one step back while accumulating the meta-gradient."""
    params = list(prob.named.values())
    start = prob.state(opt)
    recorded = []
    for t in range(T + 1):
        objective = prob.inner if t < T else prob.outer
        recorded.append((prob.state(opt), objective))
        prob.torch_step(objective, opt)
    for p in params + prob.phi:
        p.grad = None
    prob.outer().backward()
    a0 = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    a1 = [torch.zeros_like(p) for p in params]
    for p in prob.phi:
        p.grad = torch.zeros_like(p)
    for state, objective in reversed(recorded):
        prob.load(state, opt)
        grads = torch.autograd.grad(objective(), params, create_graph=True, allow_unused=True)
        x = sum((g * (-LR * u + v)).sum() for g, u, v in zip(grads, a0, a1) if g is not None)
        for p in params:
            p.grad = None
        x.backward()  # accumulates the meta-gradient; p.grad = Hessian-vector product
        hvp = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        a0, a1 = ([u * (1 - LR * WD) + WD * v + h for u, v, h in zip(a0, a1, hvp)],
                  [MOMENTUM * v - LR * MOMENTUM * u for u, v in zip(a0, a1)])
    prob.load(start, opt)
    return [p.grad.clone() for p in prob.phi]


def tiny_after_one_step(dtype=torch.float64):
    asm, x, y = tiny(dtype)
    prob = Problem(asm, x, y)
    opt = optimizer(prob.named)
    prob.real_step(opt)  # momentum buffers exist, as in every meta-iteration
    return prob, opt


def test_hypergradient_equals_central_finite_differences():
    prob, opt = tiny_after_one_step()
    grads = ours(prob, opt)
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    g = torch.Generator().manual_seed(5)
    eps = 1e-6
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in prob.phi]
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(prob.phi, direction):
                    p.add_(sign * eps * d)
            values.append(lookahead_ce(prob, opt))
            with torch.no_grad():
                for p, d in zip(prob.phi, direction):
                    p.sub_(sign * eps * d)
        fd = (values[0] - values[1]) / (2 * eps)
        analytic = sum((gr * d).sum() for gr, d in zip(grads, direction)).item()
        assert abs(analytic - fd) < 1e-3 * abs(fd), (analytic, fd)


def test_hypergradient_equals_the_reference_replay_scheme():
    prob, opt = tiny_after_one_step()
    before = {k: p.detach().clone() for k, p in prob.named.items()}
    expected = replay(prob, opt)
    assert all(torch.equal(p, before[k]) for k, p in prob.named.items())  # the replay restored its state
    got = ours(prob, opt)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def procedure(asm, args=None):
    """An l2tww procedure on the tiny spec's section, with its two optimizers."""
    section = asm.checked.trains[0]
    settings = resolved_settings(section)
    args = {**settings["procedure"]["args"], "inner_steps": T, "meta_wd": 1e-4, **(args or {})}
    ctx = Context(asm=asm, networks=("tgt",), settings=settings, args=args)
    proc = L2TWW(ctx)
    proc.setup()
    ctx.stage = Stage("train", 1)
    opts = Optimizers(proc.optimizers(ctx.stage), settings, 1).torch
    return proc, opts


def test_a_step_keeps_only_the_real_step_and_moves_phi_by_adam_on_the_hypergradient():
    asm, x, y = tiny()
    proc, opts = procedure(asm)
    twin, _, _ = tiny()  # identical weights: the same seed
    prob = Problem(twin, x, y)
    opt = optimizer(prob.named)
    meta = torch.optim.Adam(prob.phi, lr=proc.ctx.args["meta_lr"], weight_decay=1e-4)
    for _ in range(2):  # the second step starts from momentum and Adam state
        proc.step([(x, y)], opts)
        prob.real_step(opt)
        hyper = replay(prob, opt)
        for p, h in zip(prob.phi, hyper):
            p.grad = h
        meta.step()
    real, twin_named = asm.named_parameters("tgt"), prob.named
    assert real.keys() == twin_named.keys()
    for k in real:  # the look-ahead is discarded: weights, momentum and BN buffers are step 1's
        assert torch.equal(real[k], twin_named[k]), k
        assert torch.equal(opts["model"].state[real[k]]["momentum_buffer"], opt.state[twin_named[k]]["momentum_buffer"]), k
    for (k, b), (_, b2) in zip(proc.fun.gm.named_buffers(), prob.fun.gm.named_buffers()):
        assert torch.equal(b, b2), k
    moved = [p for p in asm.meta_parameters("tgt").values()]
    for p, q in zip(moved, prob.phi):  # phi: one Adam step per batch on the replay's hypergradient
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)


def test_training_leaves_the_frozen_source_bit_identical_and_records_lambdas(tmp_path):
    spec = assembler.parse(TINY, str(tmp_path / "tiny.net"))
    asm = assembler.compile(spec, imports=False)
    src = {k: v.clone() for k, v in asm.network("src").state_dict().items()}
    phi = {k: p.detach().clone() for k, p in asm.meta_parameters("tgt").items()}
    trainer = Trainer(asm, asm.checked.trains[0], None, base_dir=tmp_path, quiet=True)
    outcome = trainer.run()
    after = asm.network("src").state_dict()
    assert src.keys() == after.keys() and all(torch.equal(src[k], after[k]) for k in src)  # BN stats too
    assert any(not torch.equal(phi[k], p) for k, p in asm.meta_parameters("tgt").items())
    lams, sds = outcome.metrics["edge_lambdas"], outcome.metrics["edge_lambda_sds"]
    assert len(lams) == len(asm.checked.edges) == 5
    assert lams[4] == 1.0 and sds[4] == 0.0  # where=false: lambda fixed at 1
    assert all(0.0 <= v <= 6.0 for v in lams) and all(s >= 0 for s in sds)
    history = trainer.state.history
    assert {"ce", "matching", "meta_ce", "lr", "lr.meta"} <= history[0].keys()


def test_meta_edge_loss_is_the_weighted_matching_formula_with_the_source_resized():
    torch.manual_seed(0)
    edge = MetaEdge(3, 4)
    with torch.no_grad():
        edge.weights.weight.normal_()
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 4, 4, 4)
    m = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # bilinear 2 -> 4, half-pixel centres
    s_up = torch.einsum("ih,nchw,jw->ncij", m, s, m)
    r = torch.einsum("oc,nchw->nohw", edge.regressor.weight[:, :, 0, 0], t) + edge.regressor.bias.view(1, 3, 1, 1)
    pooled = s.mean(dim=(2, 3))
    w = torch.softmax(pooled @ edge.weights.weight.T + edge.weights.bias, 1)
    lam = torch.clamp(pooled @ edge.lam.weight.T + edge.lam.bias, 0, 6).squeeze(1)
    expected = lam * (w * (s_up - r).pow(2).mean(dim=(2, 3))).sum(1)
    assert torch.allclose(edge(s, t), expected, atol=1e-6)
    fixed = MetaEdge(3, 4, where=False)
    assert fixed.lam is None and len(fixed.meta_parameters()) == 2
    assert torch.equal(fixed.channel_weights(s)[1], torch.ones(2))
    fm = FitNetEdge(3, 4)
    r = torch.einsum("oc,nchw->nohw", fm.regressor.weight[:, :, 0, 0], t) + fm.regressor.bias.view(1, 3, 1, 1)
    assert torch.allclose(fm(s, t), (s_up - r).pow(2).flatten(1).mean(1), atol=1e-6)


def located(text: str, exc=CheckError):
    with pytest.raises(exc) as e:
        assembler.check(assembler.parse(text, "bad.net"))
    return e.value


def test_bad_sections_and_edges_are_located_errors():
    adam = located(TINY.replace("sgd(lr=0.1, momentum=0.9, weight_decay=0.001)", "adam(lr=0.01)"))
    assert adam.line == 21 and "the optimizer must be sgd, not adam" in adam.message
    where = located(TINY.replace("meta(where=false)", "meta(where=1)"))
    assert (where.line, where.column) == (16, 37) and "'where' must be true or false" in where.message
    option = located(TINY.replace("meta(where=false)", "meta(what=false)"))
    assert "weighting 'meta' has no option 'what'" in option.message and "hidden, where" in option.diagnostics[0].hint


def test_training_without_meta_edges_is_a_located_error(tmp_path):
    text = TINY.replace("match [src.s1, src.s2] * [tgt.b1, tgt.b2] : meta\n", "").replace(
        "match src.s2 -> tgt.b2 : meta(where=false)\n", "")
    asm = assembler.compile(assembler.parse(text, "none.net"), imports=False)
    with pytest.raises(SpecError) as e:
        Trainer(asm, asm.checked.trains[0], None, base_dir=tmp_path, quiet=True).run()
    assert e.value.line == 17 and "l2tww needs 'match ... : meta' edges into 'tgt'" in e.value.message


def test_the_example_trains_resumes_bit_identically_after_sigint_and_show_prints_lambdas(tmp_path):
    import shlex
    import shutil
    from safetensors.torch import load_file
    for name in ("l2tww.net", "source.net"):
        shutil.copy(DIGITS / name, tmp_path / name)
    sets = ["--set", "epochs=2", "--set", "batch=16"]
    full = run(assembler_cmd("train", "l2tww.net", "--out", "full", "-q", *sets), tmp_path)
    assert full.returncode == 0, full.stderr
    cut = run(assembler_cmd("train", "l2tww.net", "--out", "cut", *sets), tmp_path, fault="sigint@0:1:1")
    assert cut.returncode == 130, cut.stderr
    line = next(x for x in cut.stderr.splitlines() if "continue with:" in x)
    words = shlex.split(line.split("continue with:", 1)[1])
    again = run(assembler_cmd(*words[1:]), tmp_path)
    assert again.returncode == 0, again.stderr
    a, b = tmp_path / "full" / "tgt", tmp_path / "cut" / "tgt"
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(".weights." in k for k in wa) and any(".lam." in k for k in wa)  # meta-networks are saved
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b)
    lams = json.loads((b / "meta.json").read_text())["metrics"]["edge_lambdas"]
    assert lams == json.loads((a / "meta.json").read_text())["metrics"]["edge_lambdas"] and len(lams) == 12
    shown = run(assembler_cmd("show", str(b)), tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = [x for x in shown.stdout.splitlines() if "src.c" in x and "->" in x]
    assert len(rows) == 12 and all("λ" in r for r in rows)
    assert f"{lams[0]:.3f}" in rows[0] and rows[0].split()[0] == "src.c2"
    as_json = json.loads(run(assembler_cmd("show", str(b), "--json"), tmp_path).stdout)
    assert [e["lambda"] for e in as_json["tgt"]["edges"]] == lams
    drawn = run(assembler_cmd("graph", str(b), "-o", "g.svg"), tmp_path)  # the source's stubs are drawn: the edges show
    assert drawn.returncode == 0, drawn.stderr
    svg = (tmp_path / "g.svg").read_text()
    assert svg.count('class="match"') == 12 and f"meta λ={lams[0]:.2f}" in svg
