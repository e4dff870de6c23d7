"""Checkers for users' property tests of graph transforms: does a spec compile, and do two
specs compute the same function when they share weights?"""

from __future__ import annotations

import torch

from .. import ir
from ..compiler import compile, copy_weights as share_weights


def assert_compiles(spec: ir.Spec, seed: int = 0):
    """Compile every network and run it once on random inputs; return the Assembly."""
    asm = compile(spec, seed=seed)
    for name in asm:
        gm = asm[name]
        gm.eval()
        net = asm.checked.networks[name]
        xs = [torch.rand(2, *shape) for shape in net.inputs.values()]
        out = gm(*xs)
        outs = out if isinstance(out, tuple) else (out,)
        for o, n in zip(outs, net.outputs):
            assert tuple(o.shape[1:]) == net.node(n).shape, (
                f"network {name}: output {n} has shape {list(o.shape[1:])}, inferred {list(net.node(n).shape)}")
    return asm


def assert_same_function(a: ir.Spec, b: ir.Spec, network: str, *, keymap=None, gates=None, seed: int = 0,
                         atol: float = 1e-5, batch: int = 4, prepare=None) -> None:
    """Compile both specs, give `b` the weights of `a` (see `share_weights`) and assert equal
    outputs of `network` in eval mode on random inputs. `prepare(asm_a)` may set weights first."""
    asm_a = compile(a, seed=seed)
    if prepare is not None:
        prepare(asm_a)
    asm_b = compile(b, seed=seed + 1)
    share_weights(asm_a, asm_b, keymap, gates, network)
    ga, gb = asm_a[network], asm_b[network]
    ga.eval()
    gb.eval()
    torch.manual_seed(seed)
    xs = [torch.rand(batch, *s) for s in asm_a.checked.networks[network].inputs.values()]
    with torch.no_grad():
        oa, ob = ga(*xs), gb(*xs)
    oa = oa if isinstance(oa, tuple) else (oa,)
    ob = ob if isinstance(ob, tuple) else (ob,)
    assert len(oa) == len(ob), f"{len(oa)} outputs against {len(ob)}"
    for x, y in zip(oa, ob):
        assert x.shape == y.shape and torch.allclose(x, y, atol=atol), (
            f"network {network}: outputs differ by {float((x - y).abs().max()) if x.shape == y.shape else 'shape'}")
