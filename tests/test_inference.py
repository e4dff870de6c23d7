"""The inference compilation (`assembler.inference`): the same outputs as the training graph in
eval mode, batch-norm folded as computed by hand, gates fixed, shared pooling computed once,
and the training graph and its modules left untouched."""

from __future__ import annotations

import contextlib
import math
import operator

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
import torch.nn.functional as F
from torch import fx, nn

from conftest import SPECS
import assembler
from assembler import inference, inference_fuse
from assembler.modules import Gate, Proxy

TOL = 1e-5


def _randomise(asm, seed: int = 0) -> None:
    """Batch-norm statistics, affine parameters and gate logits away from their defaults, so
    that a fold that forgot one of them shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in (mod for top in asm.modules.values() for mod in top.modules()):
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
            if isinstance(m, Gate):
                m.logits.copy_(torch.randn(m.logits.shape, generator=g))


@pytest.fixture(scope="module")
def student():
    asm = assembler.compile(assembler.load(SPECS / "tailor.net"), seed=0)
    _randomise(asm)
    return asm


def _calls(gm, kind) -> list:
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(kind, type) and isinstance(gm.get_submodule(n.target), kind):
            out.append(n)
        elif n.op == "call_function" and n.target is kind:
            out.append(n)
    return out


def _conv_weights(gm) -> list[torch.Tensor]:
    """The weights of every convolution left, whether a module call or a direct torch call."""
    return [gm.get_submodule(n.target).weight for n in _calls(gm, nn.Conv2d)] + \
        [gm.get_parameter(n.args[1].target) for n in _calls(gm, torch.conv2d)]


def _x(asm, network, batch=4):
    return inference.example_inputs(asm.checked.networks[network].inputs, batch=batch, seed=1)


def test_conv_batchnorm_fold_matches_the_hand_computed_weights():
    conv = nn.Conv2d(1, 2, 1, bias=True)
    bn = nn.BatchNorm2d(2, eps=1e-5).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.5, 1.0]))
        bn.weight.copy_(torch.tensor([3.0, 0.5]))
        bn.bias.copy_(torch.tensor([-1.0, 2.0]))
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    fused = inference.fold_conv_bn(conv, bn)
    s0, s1 = 3.0 / math.sqrt(4.0 + 1e-5), 0.5 / math.sqrt(0.25 + 1e-5)
    assert fused.weight.view(-1).tolist() == pytest.approx([2.0 * s0, -1.0 * s1], rel=1e-6)
    assert fused.bias.tolist() == pytest.approx([(0.5 - 1.0) * s0 - 1.0, (1.0 + 2.0) * s1 + 2.0], rel=1e-6)
    x = torch.randn(3, 1, 5, 5)
    assert torch.allclose(fused(x), bn(conv(x)), atol=TOL)
    assert conv.weight.view(-1).tolist() == [2.0, -1.0]  # the inputs are not modified


def test_linear_batchnorm_fold_without_bias():
    lin, bn = nn.Linear(6, 4, bias=False), nn.BatchNorm1d(4)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.eval()
    fused = inference.fold_linear_bn(lin, bn)
    x = torch.randn(5, 6)
    assert torch.allclose(fused(x), bn(lin(x)), atol=TOL)


def test_plain_network_folds_every_batchnorm_and_keeps_outputs():
    asm = assembler.compile(assembler.load(SPECS / "source.net"), seed=0)
    _randomise(asm)
    gm = asm["cnn"]
    for channels_last in (False, True):
        opt = inference.compile(asm, "cnn", channels_last=channels_last)
        assert not _calls(opt, nn.BatchNorm2d)
        assert inference.max_abs_diff(gm, opt, _x(asm, "cnn")) < TOL
        assert len(_conv_weights(opt)) == 4 and not _calls(opt, nn.Conv2d)  # called directly


def test_gates_become_constant_sums_and_pools_are_shared(student):
    gm = student["student"]
    opt = inference.compile(student, "student", channels_last=False)
    assert inference.max_abs_diff(gm, opt, _x(student, "student")) < TOL
    assert not _calls(opt, Gate) and not _calls(opt, Proxy) and not _calls(opt, torch.softmax)
    assert not _calls(opt, nn.BatchNorm2d)
    # every multiply by an alpha went into a conv or an add: none is left
    assert not _calls(opt, operator.mul)
    pools = [(n.args[0], tuple(n.args[1:]))
             for n in _calls(opt, F.max_pool2d) + _calls(opt, inference_fuse.max_pool)]
    assert len(pools) == len(set(pools))  # no pooling of one map with one window twice
    before = [(n.args[0], tuple(n.args[1:])) for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(gm.get_submodule(n.target), Proxy) and gm.get_submodule(n.target).pool is not None]
    windows = {(n.args[0].name, gm.get_submodule(n.target).pool.kernel_size) for n in gm.graph.nodes
               if n.op == "call_module" and isinstance(gm.get_submodule(n.target), Proxy)
               and gm.get_submodule(n.target).pool is not None}
    assert len(before) > len(windows)  # the student really has proxies pooling the same map alike


def test_the_training_graph_and_shared_modules_are_untouched(student):
    gm = student["student"]
    code = gm.code
    state = {k: v.clone() for k, v in student.state(owned_only=False).items()}
    imported = {k: v.clone() for k, v in student.modules["pre.c2.0"].state_dict().items()}
    inference.compile(student, "student")
    for p in (inference.fold_batchnorm, inference.fold_gates, inference.share_common, inference.inline_proxies):
        assert p(gm) is not gm
    assert gm.code == code
    assert all(torch.equal(v, student.state(owned_only=False)[k]) for k, v in state.items())
    assert all(torch.equal(v, student.modules["pre.c2.0"].state_dict()[k]) for k, v in imported.items())
    assert student["student"] is gm and isinstance(gm.get_submodule("c2.gate"), Gate)


def test_each_pass_alone_keeps_outputs(student):
    gm = student["student"]
    x = _x(student, "student")
    steps = [inference.drop_dropout, inference.inline_proxies, inference.fold_gates, inference.fold_batchnorm,
             inference.fold_scales, inference.fuse_scaled_adds, inference.share_common, inference.direct_calls,
             inference.to_channels_last]
    current = gm
    for step in steps:
        current = step(current)
        assert inference.max_abs_diff(gm, current, x) < TOL, step.__name__


def test_a_path_of_alpha_zero_is_dropped():
    spec = assembler.parse("""
network n(x: [4, 6, 6]) {
    a = x -> conv(8, 3, pad=1) -> batchnorm -> relu
    g = gate(a, x -> proxy(8), x -> conv(8, 1), init=[1, 0, -1])
    y = g -> gap -> linear(3)
    return y
}
""")
    asm = assembler.compile(spec, seed=0)
    _randomise(asm)
    with torch.no_grad():
        asm.modules["n.g.gate"].logits.copy_(torch.tensor([0.5, -math.inf, 0.2]))
    gm = asm["n"]
    opt = inference.compile(asm, "n", channels_last=False)
    assert inference.max_abs_diff(gm, opt, _x(asm, "n")) < TOL
    kernels = sorted(tuple(w.shape[-2:]) for w in _conv_weights(opt))
    assert kernels == [(1, 1), (3, 3)]  # the proxy's 1x1 conv is gone


def test_linear_batchnorm_dropout_and_channels_last_on_vectors():
    spec = assembler.parse("""
network mlp(x: [12]) {
    h = x -> linear(16, bias=false) -> batchnorm -> relu -> dropout(0.5)
    y = h -> linear(3) -> batchnorm
    return y, h
}
""")
    asm = assembler.compile(spec, seed=0)
    _randomise(asm)
    opt = inference.compile(asm, "mlp")
    assert not _calls(opt, nn.BatchNorm1d) and not _calls(opt, nn.Dropout)
    assert inference.max_abs_diff(asm["mlp"], opt, _x(asm, "mlp")) < TOL


def test_channels_last_returns_ordinary_tensors():
    spec = assembler.parse("""
network n(x: [3, 8, 8]) {
    a = x -> conv(4, 3, pad=1) -> batchnorm -> relu
    return a
}
""")
    asm = assembler.compile(spec, seed=0)
    opt = inference.compile(asm, "n", channels_last=True)
    out = opt(*_x(asm, "n"))
    assert out.is_contiguous()
    assert inference.max_abs_diff(asm["n"], opt, _x(asm, "n")) < TOL


def test_verification_catches_a_wrong_rewrite(monkeypatch):
    asm = assembler.compile(assembler.load(SPECS / "source.net"), seed=0)
    _randomise(asm)

    right = inference.fold_conv_bn

    def wrong(conv, bn):  # forgets the batch-norm's shift
        fused = right(conv, bn)
        with torch.no_grad():
            fused.bias.zero_()
        return fused
    monkeypatch.setattr(inference, "fold_conv_bn", wrong)
    with pytest.raises(RuntimeError, match="changed its outputs"):
        inference.compile(asm, "cnn")


def test_interleaved_latency_times_every_candidate():
    times = inference.interleaved_latency({"a": torch.relu, "b": torch.sigmoid}, (torch.randn(4),), rounds=4)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    assert inference.median_ratio(times, "a", "b") > 0


# -- sums of convolutions (assembler.inference_fuse) ---------------------------------------------

SUMS = """
network n(x: [4, 8, 8]) {
    a = x -> conv(8, 3, pad=1) -> batchnorm -> relu
    b = a -> conv(8, 3, pad=1) -> relu -> maxpool(2)
    c = gate(b -> conv(8, 3, pad=1) -> batchnorm -> relu, b -> proxy(8, 1), a -> proxy(8, 2), x -> proxy(8, 2), mix="relu")
    d = gate(c -> conv(8, 3, pad=1, bias=false) -> batchnorm, b -> proxy(8, 1), init=[1, 1], mix="relu")
    y = d -> gap -> linear(3)
    return y
}
"""


def test_a_1x1_conv_beside_a_3x3_conv_of_the_same_value_folds_into_its_centre():
    """RepVGG's merge against the hand-made kernel: W = W3 + c * W1 at the centre tap."""
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.k3, self.k1 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1, bias=False)

        def forward(self, x):
            return torch.add(self.k3(x), self.k1(x), alpha=0.25)

    m = Two().eval()
    gm = fx.symbolic_trace(m)
    inference_fuse.merge_parallel_convs(gm)
    gm.graph.eliminate_dead_code(), gm.recompile()
    convs = [gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    assert len(convs) == 1
    expected = m.k3.weight.detach().clone()
    expected[:, :, 1, 1] += 0.25 * m.k1.weight.detach()[:, :, 0, 0]
    assert torch.allclose(convs[0].weight, expected) and torch.allclose(convs[0].bias, m.k3.bias)
    x = torch.randn(2, 2, 5, 5)
    assert torch.allclose(gm(x), m(x), atol=TOL)


def test_sums_of_convolutions_run_as_fewer_convolutions():
    """c: the block's 3x3 conv and b's 1x1 proxy read b (one conv); the proxies of a and x
    pool two maps of one size alike (one pooled concatenation, one 1x1 conv); d's two paths
    read different values and stay: 6 convs instead of 8, computing the same, at a batch
    small enough to pool the concatenation once and one large enough to pool first."""
    asm = assembler.compile(assembler.parse(SUMS), seed=0)
    _randomise(asm)
    opt = inference.compile(asm, "n", channels_last=False)
    assert inference.max_abs_diff(asm["n"], opt, _x(asm, "n", batch=5)) < TOL
    kernels = sorted(tuple(w.shape) for w in _conv_weights(opt))
    assert kernels == [(8, 4, 3, 3), (8, 8, 1, 1), (8, 8, 3, 3), (8, 8, 3, 3), (8, 8, 3, 3), (8, 12, 1, 1)]
    assert len(_calls(opt, inference_fuse.pooled_cat)) == 1
    assert len(_calls(opt, F.max_pool2d)) + len(_calls(opt, inference_fuse.max_pool)) == 1
    assert inference.max_abs_diff(asm["n"], opt, _x(asm, "n", batch=2000)) < TOL


def test_a_relu_of_a_sum_runs_as_one_fused_add_relu():
    """relu(x + y) of two inputs (never overwritten: the out-of-place fused op) and
    relu(a(x) + 0.5 * b(sigmoid(y))) (a fresh sum: the in-place one), against the module."""
    class Sums(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)

        def forward(self, x, y):
            return torch.relu(x + y), torch.relu(torch.add(self.a(x), self.b(torch.sigmoid(y)), alpha=0.5))

    m = Sums().eval()
    x, y = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    kept = x.clone(), y.clone()
    opt = inference.optimize(fx.symbolic_trace(m), check_with=(x, y))
    assert len(_calls(opt, torch._add_relu)) == 1 and len(_calls(opt, torch._add_relu_)) == 1
    assert not _calls(opt, torch.relu) and not _calls(opt, torch.relu_)
    for got, want in zip(opt(x, y), m(x, y)):
        assert torch.allclose(got, want, atol=TOL)
    assert torch.equal(x, kept[0]) and torch.equal(y, kept[1])


@pytest.mark.parametrize("batch", [1, 3000])
def test_pooled_cat_pools_each_tensor(batch):
    """Whichever order it computes in (concatenation first when small, pools first when
    large), the values are the list formula's."""
    g = torch.Generator().manual_seed(batch)
    xs = [torch.randn(batch, c, 6, 6, generator=g) for c in (2, 3, 5)]
    got = inference_fuse.pooled_cat(xs, 3, 2, 1)
    assert torch.equal(got, torch.cat([F.max_pool2d(x, 3, 2, 1) for x in xs], 1))


@given(h=st.integers(1, 11), w=st.integers(1, 11), k=st.integers(1, 5), s=st.integers(1, 4), data=st.data(),
       channels_last=st.booleans())
@settings(max_examples=300, deadline=None)
def test_max_pool_by_views_equals_the_kernel(h, w, k, s, data, channels_last):
    """max_pool's maxima of clipped strided views (forced on small maps here) give exactly
    F.max_pool2d's values, NaN included, for every window it accepts and every map size."""
    p = data.draw(st.integers(0, k // 2), label="padding")
    assume(h + 2 * p >= k and w + 2 * p >= k)
    g = torch.Generator().manual_seed(h * 1000 + w)
    x = torch.randn(2, 3, h, w, generator=g)
    x[1, 2, data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _separable_from(0):
        got = inference_fuse.max_pool(x, k, s, p)
    want = F.max_pool2d(x, k, s, p)
    assert got.shape == want.shape and torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


@contextlib.contextmanager
def _separable_from(size: int):
    old = inference_fuse.SEPARABLE_MIN_DISJOINT, inference_fuse.SEPARABLE_MIN_OVERLAP
    inference_fuse.SEPARABLE_MIN_DISJOINT = inference_fuse.SEPARABLE_MIN_OVERLAP = size
    try:
        yield
    finally:
        inference_fuse.SEPARABLE_MIN_DISJOINT, inference_fuse.SEPARABLE_MIN_OVERLAP = old


def test_max_pool_takes_the_views_only_on_large_maps_and_without_gradients(monkeypatch):
    """Below the size threshold, with a gradient to record, or traced symbolically, max_pool is
    ATen's kernel (one call); above it, the views (and the same values)."""
    calls = []
    monkeypatch.setattr(inference_fuse, "_max_along", lambda *a: calls.append(a[1]) or _real_max_along(*a))
    small = torch.randn(2, 4, 8, 8)
    large = torch.randn(inference_fuse.SEPARABLE_MIN_OVERLAP // 64 // 4, 4, 8, 8)
    assert torch.equal(inference_fuse.max_pool(small, 3, 2, 1), F.max_pool2d(small, 3, 2, 1)) and calls == []
    assert torch.equal(inference_fuse.max_pool(large, 3, 2, 1), F.max_pool2d(large, 3, 2, 1)) and calls == [2, 3]
    calls.clear()
    x = large.clone().requires_grad_()
    inference_fuse.max_pool(x, 3, 2, 1).sum().backward()
    assert calls == [] and torch.equal(x.grad, torch.func.grad(lambda t: F.max_pool2d(t, 3, 2, 1).sum())(large))
    assert not inference_fuse.separable_pool(5, 3)  # windows overlapping by two rows: the kernel stays


_real_max_along = inference_fuse._max_along


def test_max_pool_under_transforms_and_other_tensors_is_the_kernel():
    """Where the views cannot stand in for ATen's kernel (vmap rejects maximum's out=, forward
    AD would split a tangent between tied maxima, mkldnn (and quantized) tensors have no views,
    a negative padding must be refused), max_pool returns or raises what F.max_pool2d does."""
    from torch.autograd import forward_ad as fwAD
    x = torch.relu(torch.randn(512, 16, 8, 8))  # ties (zeros) after a ReLU
    batched = torch.stack([x, x.flip(0)])
    assert torch.equal(torch.vmap(lambda t: inference_fuse.max_pool(t, 3, 2, 1))(batched),
                       torch.vmap(lambda t: F.max_pool2d(t, 3, 2, 1))(batched))
    v = torch.randn_like(x)
    with fwAD.dual_level():
        got = fwAD.unpack_dual(inference_fuse.max_pool(fwAD.make_dual(x, v), 3, 2, 1))
        want = fwAD.unpack_dual(F.max_pool2d(fwAD.make_dual(x, v), 3, 2, 1))
    assert torch.equal(got.primal, want.primal) and torch.equal(got.tangent, want.tangent)
    m = x.to_mkldnn()
    assert torch.equal(inference_fuse.max_pool(m, 3, 2, 1).to_dense(), F.max_pool2d(m, 3, 2, 1).to_dense())
    with pytest.raises(RuntimeError, match="pad"):
        inference_fuse.max_pool(x, 3, 2, -1)


def test_large_maxpools_become_max_pool_and_keep_the_outputs():
    """In a compiled network, the pools whose windows overlap by at most one row call max_pool;
    at batch 512 (views) and 2 (kernel) the outputs are the training graph's."""
    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 16, 3, padding=1)
            self.a, self.b, self.wide = nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(5, 1, 2)

        def forward(self, x):
            y = torch.relu(self.c(x))
            return self.a(y) + self.b(y), self.wide(y)

    m = Pools().eval()
    opt = inference.optimize(fx.symbolic_trace(m), check_with=(torch.randn(2, 1, 8, 8),))
    assert len(_calls(opt, inference_fuse.max_pool)) == 2 and len(_calls(opt, F.max_pool2d)) == 1
    for batch in (2, 512):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            for got, want in zip(opt(x), m(x)):
                assert torch.allclose(got, want, atol=TOL)


def test_a_value_beside_a_conv_of_itself_folds_into_the_kernel_as_the_identity():
    """relu(conv1(x) + 0.5 * (conv3(x) + x)): the skip x joins the 1x1 conv of x
    (W' = W1 + 0.5 * I), leaving two convs and one addition."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.k3, self.k1 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return torch.relu(torch.add(self.k1(x), torch.add(self.k3(x), x), alpha=0.5))

    m = Block().eval()
    gm = fx.symbolic_trace(m)
    inference_fuse.merge_identity(gm)
    gm.graph.eliminate_dead_code(), gm.recompile()
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(gm(x), m(x), atol=TOL)
    convs = {tuple(gm.get_submodule(n.target).weight.shape): gm.get_submodule(n.target)
             for n in gm.graph.nodes if n.op == "call_module"}
    expected = m.k1.weight.detach().clone()
    expected[:, :, 0, 0] += 0.5 * torch.eye(4)
    assert torch.allclose(convs[(4, 4, 1, 1)].weight, expected)
    assert sum(n.op == "placeholder" or n.target in (operator.add, torch.add) for n in gm.graph.nodes) == 2


def test_convolutions_of_one_value_are_stacked():
    spec = assembler.parse("""
network n(x: [4, 6, 6]) {
    u = x -> conv(5, 1) -> relu
    v = x -> conv(3, 1, bias=false)
    y = cat(u, v) -> gap
    return y
}
""")
    asm = assembler.compile(spec, seed=0)
    opt = inference.compile(asm, "n")
    assert [tuple(w.shape) for w in _conv_weights(opt)] == [(8, 4, 1, 1)]
    assert inference.max_abs_diff(asm["n"], opt, _x(asm, "n")) < TOL


def test_in_place_ops_never_touch_the_inputs():
    asm = assembler.compile(assembler.parse(SUMS), seed=0)
    _randomise(asm)
    opt = inference.compile(asm, "n")
    assert _calls(opt, torch.relu_) and _calls(opt, torch._add_relu_)
    x = _x(asm, "n")
    kept = x[0].clone()
    for batch in (1, 7):  # shapes other than the ones the compilation saw
        xb = inference.example_inputs(asm.checked.networks["n"].inputs, batch=batch, seed=batch)
        assert inference.max_abs_diff(asm["n"], opt, xb) < TOL
    opt(*x)
    assert torch.equal(x[0], kept)
