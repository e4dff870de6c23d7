"""Back-distillation (network transplanting, paper 000): the pseudo-gradient variant against
oracles (identity and average-pooling backward, finite differences of second-order gradients,
a hand-written linear surrogate), D' independent of x as a property, the procedure's loss
against the squared Frobenius distance of the pseudo-Jacobians, its fast path against the
whole suffixes, zero-sample training, the transplant specs end to end, bit-identical resume
after SIGINT and torchrun."""

from __future__ import annotations

import functools
import json
import shlex

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch.autograd import gradcheck, gradgradcheck

from conftest import assembler_cmd, cli, run, torchrun_cmd
import assembler
from assembler.pseudograd import max_as_avg_pool, pseudo_jacobian, pseudo_relu, x_independent
from assembler.train.backdistill import BackDistill
from assembler.train.procedure import Context

ARGS = {"teacher": "cats.three", "at": "h", "lam": 1.0, "alpha": 1.0, "projections": 1, "ce": True}

INSIDE = """\
use "categories.net" as cats

network student(x: [1, 8, 8]) {
    f = x -> cats.three.f
    adapter h = f -> conv(32, 3, pad=1) -> relu
    y = h -> cats.three.y
    return y
}

train student {
    procedure = backdistill(teacher=cats.three, at=h, ce=false)
    data = noise(n=256)
    test = digits(split="test", positive=3)
    optimizer = adam(lr=0.001)
    epochs = 20
}
"""


@pytest.fixture
def transplant(work):
    """transplant.net compiled (imported blocks random or trained: the properties hold for any)."""
    return assembler.compile(assembler.load(work / "transplant.net"))


def procedure(asm, **args) -> BackDistill:
    proc = BackDistill(Context(asm=asm, networks=("student",), settings={"epochs": 1}, args={**ARGS, **args}))
    proc.setup()
    return proc


# -- the pseudo-gradient functions -----------------------------------------------------------------


def test_pseudo_relu_is_relu_forward_and_passes_gradients_unchanged():
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    g = torch.randn(4, 3, 5, 5)
    y = pseudo_relu(x)
    assert torch.equal(y, torch.relu(x)) and bool((x < 0).any())
    assert torch.equal(torch.autograd.grad(y, x, g)[0], g)  # negative inputs too


@pytest.mark.parametrize("k, stride, pad", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
def test_max_pooling_routes_gradients_as_average_pooling(k, stride, pad):
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    y = max_as_avg_pool(x, k, stride, pad)
    assert torch.equal(y, F.max_pool2d(x, k, stride, pad))
    g = torch.randn_like(y)
    got, = torch.autograd.grad(y, x, g)
    z = torch.zeros_like(x, requires_grad=True)
    want, = torch.autograd.grad(F.avg_pool2d(z, k, stride, pad), z, g)  # count_include_pad: 1/k^2
    assert torch.allclose(got, want, atol=1e-7)


def test_second_order_gradients_reach_the_weights():
    """D'(W, r) = d(r^T y)/dx through conv -> pseudo relu -> pseudo max-pool -> conv: its
    derivatives (the backward of the backward) against central differences, twice."""
    torch.manual_seed(0)
    w1 = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    r = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)

    def d_prime(w1, r):
        xs = x.clone().requires_grad_(True)
        y = F.conv2d(max_as_avg_pool(pseudo_relu(F.conv2d(xs, w1, padding=1)), 3, 2, 1), w2, padding=1)
        return torch.autograd.grad(y, xs, r, create_graph=True)[0]

    assert gradcheck(d_prime, (w1, r)) and gradgradcheck(d_prime, (w1, r))


# -- the variant on compiled networks --------------------------------------------------------------


def test_the_variant_keeps_the_forward_and_ties_the_parameters(transplant):
    plain = transplant.network("student", start=["f"])
    variant = transplant.network("student", start=["f"], variant="pseudo_gradient")
    assert "relu" in plain.code and "max_pool2d" in plain.code
    assert "torch.relu" not in variant.code and "max_pool2d" not in variant.code
    assert variant.get_submodule("h.0") is plain.get_submodule("h.0")
    x = torch.rand(5, 32, 4, 4)
    assert torch.equal(plain(x), variant(x))


def test_pseudo_jacobian_equals_a_hand_written_linear_surrogate(transplant):
    """The teacher's suffix (conv, relu, max-pool, flatten, linear, relu, linear) with ReLU
    removed and max-pooling as average pooling, written by hand: its true Jacobian."""
    tail = transplant.network("cats.three", start=["f"], variant="pseudo_gradient")
    conv, fc1, fc2 = (tail.get_submodule(f"y.0.{i}") for i in (0, 4, 6))

    def surrogate(x):
        return fc2(fc1(F.avg_pool2d(conv(x), 2).flatten(1)))

    want = torch.autograd.functional.jacobian(surrogate, torch.zeros(1, 32, 4, 4)).reshape(2, 32, 4, 4)
    got = pseudo_jacobian(tail, (32, 4, 4), (2,))
    assert x_independent(tail) and torch.allclose(got, want, atol=1e-6)


SELF_CONTAINED = """\
network student(x: [1, 8, 8]) {
    frozen f = x -> conv(32, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    adapter h = f -> conv(32, 3, pad=1) -> relu
    frozen y = h -> conv(32, 3, pad=1) -> relu -> maxpool(2) -> flatten -> linear(32) -> relu -> linear(2)
    return y
}
"""


@functools.lru_cache(maxsize=1)
def self_contained():
    return assembler.compile(assembler.parse(SELF_CONTAINED), imports=False)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), scale=st.sampled_from([0.01, 1.0, 100.0]))
def test_pseudo_gradients_do_not_depend_on_x(seed, scale):
    """d(r^T y)/dx through the pseudo-gradient graph of a student's suffix (adapter included):
    the same for any two inputs, for every projection r."""
    g = torch.Generator().manual_seed(seed)
    gm = self_contained().network("student", start=["f"], variant="pseudo_gradient")
    r = torch.randn(3, 2, generator=g)
    grads = []
    for _ in range(2):
        x = (scale * torch.randn(3, 32, 4, 4, generator=g)).requires_grad_(True)
        grads.append(torch.autograd.grad(gm(x), x, r)[0])
    assert x_independent(gm)
    assert torch.allclose(grads[0], grads[1], atol=1e-6 * max(1.0, grads[0].abs().max().item()))


def test_a_graph_that_reads_x_in_its_backward_is_recognised():
    asm = assembler.compile(assembler.parse(
        "network n(x: [4]) {\n    y = x -> linear(4) -> sigmoid -> linear(2)\n    return y\n}\n"), imports=False)
    gm = asm.network("n", variant="pseudo_gradient")
    r = torch.ones(1, 2)
    grads = [torch.autograd.grad(gm(x), x, r)[0] for x in (torch.zeros(1, 4, requires_grad=True),
                                                           torch.full((1, 4), 5.0, requires_grad=True))]
    assert not x_independent(gm) and not torch.allclose(grads[0], grads[1])


def test_sub_graphs_end_at_bindings():
    """`asm.network(name, end=[...])`: the network up to bindings; with `start`, between them."""
    asm = self_contained()
    full = asm.network("student", taps=["f", "h"])
    full.eval()
    x = torch.rand(4, 1, 8, 8)
    y, acts = full(x)
    assert torch.equal(asm.network("student", end=["f"])(x), acts["f"])
    assert torch.equal(asm.network("student", start=["f"], end=["h"])(acts["f"]), acts["h"])
    both = asm.network("student", end=["h", "f"])(x)
    assert torch.equal(both[0], acts["h"]) and torch.equal(both[1], acts["f"])
    with pytest.raises(KeyError, match="no binding"):
        asm.network("student", end=["nope"])


# -- the loss --------------------------------------------------------------------------------------


def test_the_full_jacobian_term_is_the_squared_frobenius_distance(transplant):
    """projections=0: the mean over samples of ||alpha J'_S - J'_T||_F^2, the pseudo-Jacobians
    of the whole suffixes computed apart."""
    proc = procedure(transplant, projections=0, alpha=0.7)
    j_s = pseudo_jacobian(transplant.network("student", start=["f"], variant="pseudo_gradient"), (32, 4, 4), (2,))
    j_t = pseudo_jacobian(transplant.network("cats.three", start=["f"], variant="pseudo_gradient"), (32, 4, 4), (2,))
    want = (0.7 * j_s - j_t).pow(2).sum()
    got = proc.matching(torch.rand(6, 32, 4, 4))
    assert torch.allclose(got, want, rtol=1e-5)


def test_random_projections_estimate_the_squared_frobenius_distance(transplant):
    exact = procedure(transplant, projections=0).matching(torch.rand(2, 32, 4, 4))
    torch.manual_seed(0)
    estimate = procedure(transplant, projections=64).matching(torch.rand(64, 32, 4, 4))  # 4096 draws
    assert abs(estimate.item() / exact.item() - 1) < 0.1


@pytest.mark.parametrize("projections", [0, 1, 3])
def test_the_fast_path_equals_the_whole_suffixes(transplant, projections):
    """Precomputed pseudo-Jacobians of the frozen suffixes and a double backward through the
    adapter alone give the loss and the adapter's gradient of the double backward through all."""
    proc = procedure(transplant, projections=projections, alpha=1.3)
    assert proc.fast and proc.cacheable  # the trainer caches the prefix up to the adapter's input
    weight = transplant.named_parameters("student")["h.0.weight"]
    x = torch.rand(8, 32, 4, 4)
    results = []
    for fast in (True, False):
        proc.fast = fast
        torch.manual_seed(3)
        loss = proc.matching(x)
        results.append((loss, torch.autograd.grad(loss, weight)[0]))
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, rtol=1e-5) and torch.allclose(ga, gb, rtol=1e-4, atol=1e-8)


# -- training ---------------------------------------------------------------------------------------


def test_zero_sample_training_lowers_the_matching_loss_and_raises_accuracy(work):
    """An adapter inside the "3" network (its ideal: the identity), trained on noise alone."""
    (work / "inside.net").write_text(INSIDE)
    from assembler.train.run import train_spec
    history = train_spec(assembler.load(work / "inside.net"), quiet=True)["student"]
    first, last = history[0], history[-1]
    assert last["match"] < first["match"] / 3
    assert last["test_accuracy"] >= 0.75  # chance: 0.5 on the balanced test set
    assert "ce" not in last and last["train_accuracy"] is None  # no label was used


def test_transplant_specs_train_with_samples_and_with_noise(work):
    code, _, err = cli("train", "transplant.net", "--out", "s", "-q", "--set", "epochs=3")
    assert code == 0, err
    lines = [json.loads(x) for x in (work / "s/student/metrics.jsonl").read_text().splitlines()]
    assert {"ce", "match", "train_accuracy", "test_accuracy"} <= lines[-1].keys()
    code, _, err = cli("train", "transplant_noise.net", "--out", "n", "-q", "--set", "epochs=3")
    assert code == 0, err
    lines = [json.loads(x) for x in (work / "n/student/metrics.jsonl").read_text().splitlines()]
    assert "ce" not in lines[-1] and lines[-1]["match"] < lines[0]["match"] and lines[-1]["test_accuracy"] is not None
    stored = load_file(str(work / "n/student/weights.safetensors"))
    assert set(stored) == {"student.h.0.weight", "student.h.0.bias"}  # only the adapter is the student's own
    code, _, err = cli("fmt", "--check", "transplant_noise.net")
    assert code == 0, err


def test_interrupted_backdistill_resumes_bit_identically(work):
    """Ctrl-C inside the second epoch (3 steps each): the printed command resumes it, and the
    weights and metrics equal an uninterrupted run's (the projections r come from the saved RNG)."""
    spec, sets = "transplant.net", ["--set", "batch=8", "--set", "epochs=2"]
    full = run(assembler_cmd("train", spec, "--out", "full", "-q", *sets), work)
    assert full.returncode == 0, full.stderr
    cut = run(assembler_cmd("train", spec, "--out", "cut", *sets), work, fault="sigint@0:1:1")
    assert cut.returncode == 130, cut.stderr
    line = next(x for x in cut.stderr.splitlines() if "continue with:" in x)
    words = shlex.split(line.split("continue with:", 1)[1])
    again = run(assembler_cmd(*words[1:]), work)
    assert again.returncode == 0, again.stderr
    a, b = (load_file(str(work / d / "student/weights.safetensors")) for d in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda d: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                       for x in (work / d / "student/metrics.jsonl").read_text().splitlines()]
    assert strip("full") == strip("cut") and len(strip("cut")) == 2


def test_torchrun_two_processes_average_the_adapter_gradients(work):
    """Double backward cannot go through DDP: two gloo ranks train plain graphs on their halves
    of the samples and average the gradients by hand, so both end with the same adapter."""
    r = run(torchrun_cmd("train", "transplant.net", "--set",
              "procedure=backdistill_ranks(teacher=cats.three, at=h)", "--set", "epochs=2", "--set", "batch=8",
              "--out", "ddp", "-q"), work, plugins="bdranks")
    assert r.returncode == 0, r.stderr
    final = json.loads((work / "ddp/student/meta.json").read_text())["metrics"]
    assert final["ranks"] == 2 and final["ranks_agree"] is True
    lines = [json.loads(x) for x in (work / "ddp/student/metrics.jsonl").read_text().splitlines()]
    assert [m.get("stage") for m in lines] == [None, None, "final"] and {"ce", "match"} <= lines[1].keys()


def test_two_ranks_equal_one_process_with_their_batches_together(work):
    """torchrun with 2 ranks of batch 4 takes the steps one process takes with batch 8 (rank r
    gets samples r, r+2, ... of the epoch's order; the gradients are averaged): the adapters
    agree to float rounding. The cache starts empty, so the import is trained first, by one
    rank while the other waits on its lock (they used to deadlock, one in the lock and one
    joining the process group)."""
    cache = str(work / "cache")
    r = run(torchrun_cmd("train", "transplant.net", "--set",
              "procedure=backdistill_ranks(teacher=cats.three, at=h, projections=0)", "--set", "epochs=2",
              "--set", "batch=4", "--out", "ddp", "-q"), work, plugins="bdranks", ASSEMBLER_CACHE=cache)
    assert r.returncode == 0, r.stderr
    one = run(assembler_cmd("train", "transplant.net", "--set", "procedure=backdistill(teacher=cats.three, at=h, "
                          "projections=0)", "--set", "epochs=2", "--set", "batch=8", "--out", "one", "-q"),
               work, ASSEMBLER_CACHE=cache)
    assert one.returncode == 0, one.stderr
    a, b = load_file(str(work / "ddp/student/weights.safetensors")), load_file(str(work / "one/student/weights.safetensors"))
    assert a.keys() == b.keys() == {"student.h.0.weight", "student.h.0.bias"}
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), (k, float((a[k] - b[k]).abs().max()))
    from assembler.resolve import read
    initial = assembler.compile(read(work / "transplant.net"), imports=False).modules[
        "student.h.0"].weight.detach()
    assert (a["student.h.0.weight"] - initial).abs().max() > 1e-3  # it trained
