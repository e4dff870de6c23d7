"""`backdistill`: back-distillation, the training signal of network transplanting (Zhang, Yang, Yu,
Wu, paper 000, Eq. 3 and 4b).

The student is a network whose adapter `h` (`at`) connects a frozen category module f to a
frozen task module g_S; the teacher is a network g_T(f(I)) with the same category module. With
x = the binding the adapter reads (f's output), y_S = g_S(h(x)) and y_T = g_T(x), a step minimises
over the adapter's parameters only

    Loss = CE(y_S, y*)  +  lam * mean_i || alpha * D'_S(x_i, r_i) - D'_T(x_i, r_i) ||^2

  - D' = d(r^T y)/dx taken through the *pseudo-gradient* graph of each suffix (the registered
    variant `pseudo_gradient`, `assembler.pseudograd`: ReLU passes gradients unchanged,
    max-pooling routes them as average pooling). D'_S keeps its graph (`create_graph=True`), so
    the loss reaches h by differentiating a gradient ("back-back-propagation"); D'_T has none.
  - J = r^T y, a random linear function of the outputs: r ~ N(0, I), `projections` draws per
    sample, redrawn every step. For Gaussian r, E ||A^T r||^2 = ||A||_F^2, so the term is an
    unbiased estimate of the squared Frobenius distance between the two pseudo-Jacobians, and
    every sample of a batch brings its own r (a batch of 64 averages 64 projections).
    `projections=0` computes that distance exactly (one one-hot r per output unit: as many
    backward passes as outputs, for small outputs). Random r is the default: the paper says J is
    "an arbitrary function of y that outputs a scalar", and it costs one pass whatever the
    output size.
  - alpha is a fixed scalar (default 1), not learned: the paper's objective is min over theta_h
    alone, alpha "a scaling scalar" of the loss like lam. With g_S = g_T the ideal adapter is the
    identity and alpha = 1 is exact.
  - CE only when `ce=true` (the default; the section then needs labelled data, a check error
    otherwise). `ce=false` trains without labels: with `data = noise(n=...)` no image is used at
    all. Why that works: with linear J and the pseudo-gradient graph, D' is a linear function of
    r that does not read x (for convolutions, linear layers, frozen batch-norm, ReLU, pooling,
    flattening: `pseudograd.x_independent`), so any x, even noise, gives the same loss.
  - CE is taken through the ordinary graph: its gradient is the true one.

The frozen prefix up to the adapter's input is deterministic, so the trainer caches its outputs
(`cacheable` when the cached frontier is exactly that binding). Batch-norm of frozen parts is in
eval mode; the teacher runs in eval mode. Double backward cannot go through DDP: `ddp = False`
and the base class averages the adapter's gradients over ranks under torchrun.

Speed: the frozen suffixes never change, and where their pseudo-gradient graphs do not read x
(`pseudograd.x_independent`: convolutions, linear layers, frozen batch-norm, ReLU, pooling) their
pseudo-Jacobians are constant matrices. They are computed once (`pseudograd.pseudo_jacobian`,
one backward pass per output unit), so a step computes D'_T = r M_T, the gradient arriving at the
adapter's output v = r G_S, and differentiates twice through the adapter alone. The result is the
same as through the whole suffixes (a test compares both paths). Suffixes whose pseudo-gradients
read x (sigmoid, train-mode batch-norm, products) take the general path: double backward
through the whole student suffix, a backward pass through the teacher's, every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks.backdistill import AdapterSite, adapter_site
from ..errors import Diagnostic, SpecError
from ..pseudograd import pseudo_jacobian, x_independent  # importing it registers "pseudo_gradient"
from .prefix import split
from .procedure import Batch, Procedure, Step, first_output

VARIANT = "pseudo_gradient"
MAX_JACOBIAN = 2 ** 24  # entries of the precomputed pseudo-Jacobians (64 MiB in float32)


class BackDistill(Procedure):
    """Back-distillation of one network's adapter against a teacher (see the module docstring)."""

    name = "backdistill"
    ddp = False  # the step differentiates a gradient: plain graphs, gradients averaged by hand

    def __init__(self, ctx):
        super().__init__(ctx)
        self.student = ctx.networks[0]
        net = ctx.asm.checked.networks[self.student]
        site = adapter_site(net, ctx.args["at"])
        if not isinstance(site, AdapterSite):  # `check` reports this located; here for API callers
            raise SpecError(Diagnostic(site.message, ctx.asm.checked.filename, hint=site.hint))
        self.site = site
        parts = split(net)
        self._frontier = parts[2] if parts is not None else None
        self.out_shape = tuple(net.node(net.outputs[0]).shape)
        self.x_shape = tuple(net.shape(site.reads))
        self.h_shape = tuple(net.shape(site.adapter))
        self.fast = False  # frozen suffixes' pseudo-Jacobians precomputed (decided in setup)
        self._jacobians: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def cacheable(self) -> bool:
        """The trainer may cache the frozen prefix when its frontier is the adapter's input alone."""
        return self._frontier == [self.site.node]

    def setup(self) -> None:
        try:
            teacher = self._teacher()
        except KeyError as e:
            raise SpecError(Diagnostic(f"teacher '{self.ctx.args['teacher']}': {e.args[0]}",
                                       self.ctx.asm.checked.filename)) from None
        teacher.eval()
        self.fast = self._constant_tails()

    def _constant_tails(self) -> bool:
        """Whether both frozen suffixes (the student's after the adapter, the teacher's) have
        pseudo-Jacobians that do not depend on x, small enough to keep."""
        try:
            tail = self._task_module()
        except KeyError:  # the student's outputs read more than the adapter's output
            return False
        units = math.prod(self.out_shape)
        small = units * (math.prod(self.h_shape) + math.prod(self.x_shape)) <= MAX_JACOBIAN
        return small and x_independent(tail) and x_independent(self._teacher())

    # -- the graphs ------------------------------------------------------------------------------

    def _suffix(self, variant: str | None = None):
        """The student from the adapter's input to its outputs."""
        return self.ctx.asm.network(self.student, start=[self.site.reads], variant=variant)

    def _adapter(self):
        return self.ctx.asm.network(self.student, start=[self.site.reads], end=[self.site.adapter], variant=VARIANT)

    def _task_module(self):
        """g_S: the student from the adapter's output to its outputs."""
        return self.ctx.asm.network(self.student, start=[self.site.adapter], variant=VARIANT)

    def _teacher(self):
        return self.ctx.asm.network(self.ctx.args["teacher"], start=[self.site.reads], variant=VARIANT)

    def adapter_input(self, x) -> torch.Tensor:
        """x = the value of the binding the adapter reads: the cached frontier when the trainer
        caches the prefix, else a no-grad pass of the student's prefix up to there."""
        if isinstance(x, tuple):
            return x[0]
        with torch.no_grad():
            return self.ctx.asm.network(self.student, end=[self.site.reads])(x)

    # -- the loss --------------------------------------------------------------------------------

    def probes(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(inputs, projections r, weight of each row): K Gaussian r per sample, or, with
        projections=0, one one-hot r per output unit (the full Jacobian). The first len(feats)
        rows are the samples in order."""
        k, b = self.ctx.args["projections"], len(feats)
        reps = (1,) * (feats.dim() - 1)
        if k > 0:
            xs = feats.repeat(k, *reps) if k > 1 else feats
            return xs, torch.randn((k * b, *self.out_shape), device=feats.device, dtype=feats.dtype), 1.0 / (k * b)
        units = math.prod(self.out_shape)
        eye = torch.eye(units, device=feats.device, dtype=feats.dtype).view(units, *self.out_shape)
        return feats.repeat(units, *reps), eye.repeat_interleave(b, 0), 1.0 / b  # row j*b + i: sample i, unit j

    def pseudo_gradients(self, xs: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D'_S with its graph, D'_T without): d(r^T y)/dx through both pseudo-gradient graphs."""
        if self.fast:
            return self._through_adapter(xs, r)
        x_s = xs.detach().requires_grad_(True)
        d_s, = torch.autograd.grad(first_output(self._suffix(VARIANT)(x_s)), x_s, r, create_graph=True)
        x_t = xs.detach().requires_grad_(True)
        d_t, = torch.autograd.grad(first_output(self._teacher()(x_t)), x_t, r)
        return d_s, d_t

    def _through_adapter(self, xs: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same with the frozen suffixes' constant pseudo-Jacobians: v = r G_S arrives at the
        adapter's output, D'_T = r M_T."""
        g_s, m_t = self.jacobians(xs)
        rows = r.flatten(1)
        v = (rows @ g_s.flatten(1)).view(len(r), *self.h_shape)
        d_t = (rows @ m_t.flatten(1)).view(len(r), *self.x_shape)
        x_s = xs.detach().requires_grad_(True)
        d_s, = torch.autograd.grad(self._adapter()(x_s), x_s, v, create_graph=True)
        return d_s, d_t

    def jacobians(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G_S, M_T): the pseudo-Jacobians of the student's task module and of the teacher's
        suffix, computed once (both are frozen) on `like`'s device and dtype."""
        if self._jacobians is None or self._jacobians[0].device != like.device:
            at = dict(device=like.device, dtype=like.dtype)
            self._jacobians = (pseudo_jacobian(self._task_module(), self.h_shape, self.out_shape, **at),
                               pseudo_jacobian(self._teacher(), self.x_shape, self.out_shape, **at))
        return self._jacobians

    def matching(self, feats: torch.Tensor) -> torch.Tensor:
        """The back-distillation term: mean over samples and projections of ||alpha D'_S - D'_T||^2."""
        xs, r, weight = self.probes(feats)
        d_s, d_t = self.pseudo_gradients(xs, r)
        return (self.ctx.args["alpha"] * d_s - d_t).flatten(1).pow(2).sum() * weight

    def loss(self, batch: Batch) -> Step:
        (x, y), = batch
        feats = self.adapter_input(x)
        labelled = not bool((y < 0).any())
        total, terms, outputs = 0.0, {}, {}
        if self.ctx.args["ce"] and labelled:
            logits = first_output(self._suffix()(feats))
            ce = F.cross_entropy(logits, y)
            total, terms["ce"], outputs[self.student] = ce, ce.item(), logits
        elif labelled:  # train accuracy without the task loss
            with torch.no_grad():
                outputs[self.student] = first_output(self._suffix()(feats))
        match = self.matching(feats)
        total = total + self.ctx.args["lam"] * match
        terms["match"] = match.item()
        return Step(total, terms, outputs)
