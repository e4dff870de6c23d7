"""Checkers for users' property tests of graph transforms: does a spec compile, and do two
specs compute the same function when they share weights?"""

from __future__ import annotations

import torch

from .. import ir


def assert_compiles(spec: ir.Spec, seed: int = 0):
    """Compile every network and run it once on random inputs; return the Assembly."""
    from ..compiler import compile
    asm = compile(spec, seed=seed, imports=False)
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


def share_weights(src, dst, keymap: dict[str, str] | None = None, gates: dict[str, list[int]] | None = None,
                  network: str | None = None) -> int:
    """Copy tensors from Assembly `src` into `dst` where their module keys agree (after
    `keymap`, a map of module path prefixes inside `network` as `edits.prune_with_map` returns;
    `gates` selects the surviving logits of pruned gates). Returns how many modules were copied."""
    keymap = keymap or {}
    gates = gates or {}
    copied = 0
    with torch.no_grad():
        for key, module in src.modules.items():
            new = _map_key(key, keymap, network)
            if new not in dst.modules:
                continue
            state = module.state_dict()
            if network and key.endswith(".gate") and key[len(network) + 1:-len(".gate")] in gates:
                keep = gates[key[len(network) + 1:-len(".gate")]]
                state = {"logits": state["logits"][keep]}
            target = dst.modules[new].state_dict()
            if all(k in target and target[k].shape == v.shape for k, v in state.items()):
                for k, v in state.items():
                    target[k].copy_(v)
                copied += 1
    return copied


def _map_key(key: str, keymap: dict[str, str], network: str | None) -> str:
    if not network or not key.startswith(network + "."):
        return key
    local = key[len(network) + 1:]
    best = max((p for p in keymap if local == p or local.startswith(p + ".")), key=len, default=None)
    if best is None:
        return key
    return f"{network}.{keymap[best]}{local[len(best):]}"


def assert_same_function(a: ir.Spec, b: ir.Spec, network: str, *, keymap=None, gates=None, seed: int = 0,
                         atol: float = 1e-5, batch: int = 4, prepare=None) -> None:
    """Compile both specs, give `b` the weights of `a` (see `share_weights`) and assert equal
    outputs of `network` in eval mode on random inputs. `prepare(asm_a)` may set weights first."""
    from ..compiler import compile
    asm_a = compile(a, seed=seed, imports=False)
    if prepare is not None:
        prepare(asm_a)
    asm_b = compile(b, seed=seed + 1, imports=False)
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
