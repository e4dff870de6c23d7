"""The inference compilation: a compiled network rewritten for eval-mode speed, same outputs.

`compile(asm, "student")` returns a new `torch.fx.GraphModule` that computes what
`asm["student"].eval()` computes, with:

- eval-mode dropout removed;
- NetTailor's proxies inlined (max-pool, 1x1 conv, batch-norm as separate nodes) so the
  passes below see their parts;
- gates fixed: softmax computed once, each path multiplied by its constant alpha (a Python
  float) and summed (then a ReLU for `mix="relu"`); a path whose alpha is exactly 0 is dropped
  with everything only it used;
- batch-norm folded into the conv or linear layer before it;
- constant scales pushed through positively homogeneous ops (relu, pooling, flatten: alpha is
  a softmax value, so it is positive) into the conv or linear layer that produces them; a
  scale that cannot be folded stays a multiply fused into its add (`torch.add(a, b, alpha=c)`);
- identical computations on the same value shared (common-subexpression elimination): two
  proxies max-pooling one map with one window compute it once;
- conv and linear layers called as torch functions on their weights (no module overhead);
- channels-last memory format (`channels_last=True`, the default of `compile`);
- the weights the graph reads registered on the GraphModule itself (one attribute lookup each).

Every pass is also a pure function GraphModule -> GraphModule (`fold_batchnorm(gm)`, ...):
it works on a deep copy, so the training graph and the modules that networks share are never
modified. `compile` checks the result against the training graph on random inputs.
"""

from __future__ import annotations

import copy
import operator
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import inference_fuse as fuse
from .measure import example_inputs, interleaved_latency, max_abs_diff, median_ratio, outputs
from . import modules as M

# Functions without state or randomness: two calls with the same arguments give the same value.
PURE_FUNCTIONS = frozenset({
    F.max_pool2d, F.avg_pool2d, torch.relu, F.gelu, torch.sigmoid, torch.tanh, torch.softmax,
    torch.flatten, F.interpolate, operator.add, operator.mul, torch.cat, torch.add, torch.conv2d, F.linear,
})
# The compiler's own functions, known by name: the module defining them may move.
OWN_PURE = frozenset({"gap", "add", "mul"})
# Modules that are deterministic functions of their input in eval mode.
PURE_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.MaxPool2d, nn.AvgPool2d)
# f(a * x) = a * f(x) for a > 0: a positive scale may move from after these ops to before them.
HOMOGENEOUS = frozenset({torch.relu, F.max_pool2d, F.avg_pool2d, torch.flatten})
OWN_HOMOGENEOUS = frozenset({"gap"})


# ---------------------------------------------------------------------------------------------
# Entry points


def compile(asm, network: str, *, channels_last: bool = True, verify: bool = True) -> fx.GraphModule:
    """The inference-compiled GraphModule of `asm[network]` (eval mode, no gradients).

    `channels_last` (a no-op for networks without images) made every example network faster
    on this CPU build, most at batch 256 (benchmarks/bench_inference.py, docs/INTEROP.md);
    pass False for a layout-neutral graph (export does). With `verify`, the result is run
    against the training graph in eval mode on random inputs of the network's shapes and a
    RuntimeError is raised if they differ by more than 1e-5 (times the outputs' scale above 1)."""
    source = asm.network(network)
    inputs = example_inputs(asm.checked.networks[network].inputs, batch=2)
    return optimize(source, channels_last=channels_last, check_with=inputs if verify else None)


def optimize(gm: fx.GraphModule, *, channels_last: bool = True,
             check_with: tuple[torch.Tensor, ...] | None = None) -> fx.GraphModule:
    """Every pass in order on a copy of `gm` (a compiled network's GraphModule); with
    `check_with` (inputs), the result is checked against `gm` as `compile` does."""
    out = _copy(gm)
    for rewrite in (_drop_dropout, _inline_proxies, _fold_gates, _fold_batchnorm, _fold_scales,
                    _fuse_scaled_adds, _share_common, fuse.merge_parallel_convs, fuse.merge_identity):
        rewrite(out)
        _tidy(out)
    if check_with is not None:  # shapes tell which values can be concatenated or overwritten
        _shapes(out, check_with)
        fuse.concat_convs(out)
        _tidy(out)
    fuse.stack_sibling_convs(out)
    _tidy(out)
    _direct_calls(out)
    _tidy(out)
    if channels_last:
        _to_channels_last(out)
        _tidy(out)
    if check_with is not None:
        _shapes(out, check_with)
        fuse.in_place(out)
        fuse.add_relu(out)
        _tidy(out)
    fuse.large_pools(out)
    _flat_constants(out)
    _tidy(out)
    if check_with is not None:
        diff = max_abs_diff(gm, out, check_with)
        scale = max((float(t.abs().max()) for t in outputs(gm, check_with) if t.numel()), default=0.0)
        if not diff <= 1e-5 * max(1.0, scale):
            raise RuntimeError(f"the inference compilation of '{type(gm).__name__}' changed its outputs "
                               f"(max abs difference {diff:.3g} for outputs up to {scale:.3g}); this is a bug "
                               "in assembler.inference")
    return out


def _shapes(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> None:
    """Every node's output shape in `node.meta["tensor_meta"]` (fx's ShapeProp)."""
    from torch.fx.passes.shape_prop import ShapeProp
    with torch.no_grad():
        ShapeProp(gm).propagate(*inputs)


def _pass(rewrite: Callable[[fx.GraphModule], None], doc: str) -> Callable[[fx.GraphModule], fx.GraphModule]:
    def run(gm: fx.GraphModule) -> fx.GraphModule:
        out = _copy(gm)
        rewrite(out)
        _tidy(out)
        return out
    run.__name__ = rewrite.__name__.lstrip("_")
    run.__doc__ = doc + " Works on a copy: `gm` is not modified."
    return run


# ---------------------------------------------------------------------------------------------
# Graph helpers


def _copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A deep copy in eval mode without gradients: the training graph's modules stay untouched."""
    out = copy.deepcopy(gm)
    out.eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def _tidy(gm: fx.GraphModule) -> None:
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _uses_of_target(gm: fx.GraphModule, target: str) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == target)


def _own(gm: fx.GraphModule, node: fx.Node, module: nn.Module) -> None:
    """Give `node` its own module (a fresh path when its old one serves other nodes too)."""
    target = node.target
    if _uses_of_target(gm, target) > 1:
        base = f"{target}_inference"
        target, i = base, 1
        while _has(gm, target):
            target, i = f"{base}{i}", i + 1
    gm.add_submodule(target, module)
    node.target = target


def _has(gm: nn.Module, path: str) -> bool:
    try:
        gm.get_submodule(path)
        return True
    except AttributeError:
        return False


# ---------------------------------------------------------------------------------------------
# The passes


def _drop_dropout(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        m = _module(gm, node)
        if isinstance(m, nn.Dropout):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def _inline_proxies(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if isinstance(_module(gm, node), M.Proxy):
            _inline(gm, node)
    _pools_as_functions(gm)


def _inline(gm: fx.GraphModule, node: fx.Node) -> None:
    """Replace a call of a composite module by its own traced graph (its torch.nn leaves
    called at their paths under the module), whatever its forward does."""
    sub = fx.symbolic_trace(gm.get_submodule(node.target))
    env: dict[fx.Node, object] = {}
    inputs = iter(node.args)
    result = None
    with gm.graph.inserting_before(node):
        for n in sub.graph.nodes:
            if n.op == "placeholder":
                env[n] = next(inputs)
            elif n.op == "output":
                result = fx.node.map_arg(n.args[0], lambda a: env[a])
            else:
                copied = gm.graph.node_copy(n, lambda a: env[a])
                if copied.op in ("call_module", "get_attr"):
                    copied.target = f"{node.target}.{n.target}"
                env[n] = copied
    node.replace_all_uses_with(result)
    gm.graph.erase_node(node)


def _pools_as_functions(gm: fx.GraphModule) -> None:
    """Max-pool modules as the language's maxpool calls them, so equal pools can be shared."""
    for node in list(gm.graph.nodes):
        p = _module(gm, node)
        if type(p) is not nn.MaxPool2d or p.ceil_mode or p.return_indices or _int(p.dilation) != 1:
            continue
        if any(a != b for a, b in map(_pair, (p.kernel_size, p.stride, p.padding))):
            continue  # a window that is not square: leave the module
        with gm.graph.inserting_before(node):
            call = gm.graph.call_function(F.max_pool2d, (node.args[0], _int(p.kernel_size), _int(p.stride),
                                                         _int(p.padding)))
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _int(v) -> int:
    return v[0] if isinstance(v, (tuple, list)) else int(v)


def _fold_gates(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        gate = _module(gm, node)
        if not isinstance(gate, M.Gate):
            continue
        with torch.no_grad():
            alphas = [float(a) for a in gate.alphas()]
        kept = [(p, a) for p, a in zip(node.args, alphas) if a != 0.0]
        with gm.graph.inserting_before(node):
            out = None
            for path, a in kept:
                term = path if a == 1.0 else gm.graph.call_function(operator.mul, (path, a))
                out = term if out is None else gm.graph.call_function(operator.add, (out, term))
            if out is None:  # every alpha underflowed to 0: the gate outputs zeros
                out = gm.graph.call_function(operator.mul, (node.args[0], 0.0))
            if gate.mix == "relu":  # relu(sum_i alpha_i path_i): the reference code's mixing
                out = gm.graph.call_function(torch.relu, (out,))
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)


def _fold_batchnorm(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or bn.running_mean is None:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            continue
        layer = _module(gm, src)
        if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            fused = fold_conv_bn(layer, bn)
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and _rank(src) in (None, 2):
            fused = fold_linear_bn(layer, bn)
        else:
            continue
        _own(gm, src, fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)


def _rank(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")
    return len(meta.shape) if meta is not None else None


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval batch-norm as y = x * scale + shift, computed in float64 for a faithful fold."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing bn(conv(x)) in eval mode (neither argument is modified)."""
    with torch.no_grad():
        scale, shift = _bn_scale_shift(bn)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
        fused.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        fused.bias.copy_((bias * scale + shift).to(conv.weight.dtype))
    return fused.requires_grad_(False).eval()


def fold_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A new linear layer computing bn(linear(x)) in eval mode for [N, C] inputs."""
    with torch.no_grad():
        scale, shift = _bn_scale_shift(bn)
        fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
        fused.weight.copy_((linear.weight.double() * scale.view(-1, 1)).to(linear.weight.dtype))
        bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(scale)
        fused.bias.copy_((bias * scale + shift).to(linear.weight.dtype))
    return fused.requires_grad_(False).eval()


def _fold_scales(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not operator.mul or not isinstance(node.args[1], float):
            continue
        scale, x = node.args[1], node.args[0]
        if scale <= 0:
            continue
        layer = _scalable_producer(gm, x)
        if layer is None:
            continue
        fused = copy.deepcopy(gm.get_submodule(layer.target))
        with torch.no_grad():
            fused.weight.mul_(scale)
            if fused.bias is not None:
                fused.bias.mul_(scale)
        _own(gm, layer, fused)
        node.replace_all_uses_with(x)
        gm.graph.erase_node(node)


def _scalable_producer(gm: fx.GraphModule, x) -> fx.Node | None:
    """The conv or linear node that a positive scale of `x` can move into: reached from `x`
    through homogeneous ops, every value on the way read only once."""
    while isinstance(x, fx.Node) and len(x.users) == 1:
        if x.op == "call_function" and (x.target in HOMOGENEOUS or _own_function(x.target, OWN_HOMOGENEOUS)):
            x = x.args[0]
        elif x.op == "call_module" and isinstance(_module(gm, x), (nn.Conv2d, nn.Linear)):
            return x
        else:
            return None
    return None


def _fuse_scaled_adds(gm: fx.GraphModule) -> None:
    """add(a, mul(b, c)) -> torch.add(a, b, alpha=c): one kernel instead of two."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not operator.add:
            continue
        a, b = node.args
        for first, second in ((a, b), (b, a)):
            if _is_scaled(second) and len(second.users) == 1 and isinstance(first, fx.Node):
                with gm.graph.inserting_before(node):
                    fused = gm.graph.call_function(torch.add, (first, second.args[0]), {"alpha": second.args[1]})
                node.replace_all_uses_with(fused)
                gm.graph.erase_node(node)
                break


def _is_scaled(n) -> bool:
    return isinstance(n, fx.Node) and n.op == "call_function" and n.target is operator.mul and \
        isinstance(n.args[0], fx.Node) and isinstance(n.args[1], float)


def _share_common(gm: fx.GraphModule) -> None:
    seen: dict[tuple, fx.Node] = {}
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and (node.target in PURE_FUNCTIONS or _own_function(node.target, OWN_PURE)):
            pass
        elif node.op == "call_module" and isinstance(_module(gm, node), PURE_MODULES):
            pass
        else:
            continue
        key = (node.op, node.target, _hashable(node.args), _hashable(node.kwargs))
        if key in seen:
            node.replace_all_uses_with(seen[key])
            gm.graph.erase_node(node)
        else:
            seen[key] = node


def _own_function(fn, names: frozenset[str]) -> bool:
    return getattr(fn, "__name__", None) in names and getattr(fn, "__module__", "").startswith("assembler.")


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return (type(v).__name__,) + tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, float):
        return ("float", v)  # 2 and 2.0 are different arguments
    return v


def _direct_calls(gm: fx.GraphModule) -> None:
    """Conv, linear and pooling modules called as torch functions on their tensors: the same
    kernels without nn.Module's per-call overhead, which dominates small networks at batch 1."""
    graph = gm.graph
    for node in list(graph.nodes):
        m = _module(gm, node)
        if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            with graph.inserting_before(node):
                w = graph.get_attr(f"{node.target}.weight")
                b = graph.get_attr(f"{node.target}.bias") if m.bias is not None else None
                call = graph.call_function(torch.conv2d, (node.args[0], w, b, m.stride, m.padding, m.dilation,
                                                          m.groups))
        elif type(m) is nn.Linear:
            with graph.inserting_before(node):
                w = graph.get_attr(f"{node.target}.weight")
                b = graph.get_attr(f"{node.target}.bias") if m.bias is not None else None
                call = graph.call_function(F.linear, (node.args[0], w, b))
        else:
            continue
        node.replace_all_uses_with(call)
        graph.erase_node(node)


def _flat_constants(gm: fx.GraphModule) -> None:
    """Every weight the graph reads registered on the GraphModule itself, under its dotted path
    with "_" for ".": `self.pre_b1_0_h_0_weight` is one attribute lookup where
    `getattr(getattr(self.pre.b1, "0").h, "0").weight` is five, and at batch 1 those lookups
    took a third of a small network's time (benchmarks/bench_inference.py)."""
    flat: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr" or "." not in node.target:
            continue
        if node.target not in flat:
            owner, _, leaf = node.target.rpartition(".")
            value = getattr(gm.get_submodule(owner), leaf)
            if not isinstance(value, torch.Tensor):
                continue
            base = name = node.target.replace(".", "_")
            i = 1
            while hasattr(gm, name):
                name, i = f"{base}_{i}", i + 1
            if isinstance(value, nn.Parameter):
                gm.register_parameter(name, value)
            else:
                gm.register_buffer(name, value)
            flat[node.target] = name
        node.target = flat[node.target]


def _as_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _as_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous()


def _to_channels_last(gm: fx.GraphModule) -> None:
    """Channels-last weights and inputs (faster convs and pools on many CPUs); outputs come
    back in the default layout so callers see ordinary tensors."""
    gm.to(memory_format=torch.channels_last)
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "placeholder":
            with graph.inserting_after(node):
                converted = graph.call_function(_as_channels_last, (node,))
            node.replace_all_uses_with(converted, delete_user_cb=lambda user: user is not converted)
        elif node.op == "output":
            with graph.inserting_before(node):
                node.args = (fx.node.map_arg(node.args[0], lambda n: graph.call_function(_as_contiguous, (n,))),)


drop_dropout = _pass(_drop_dropout, "Eval-mode dropout removed.")
inline_proxies = _pass(_inline_proxies, "Each NetTailor proxy split into its max-pool, 1x1 conv and batch-norm nodes.")
fold_gates = _pass(_fold_gates, "Gates replaced by constant-alpha sums (and their ReLU for mix=\"relu\"); paths "
                                "of alpha exactly 0 dropped.")
fold_batchnorm = _pass(_fold_batchnorm, "Eval batch-norm folded into the conv (or linear) layer it follows, where "
                                        "that layer's output is read only by the batch-norm.")
fold_scales = _pass(_fold_scales, "Positive constant scales moved into the conv or linear layer that produces "
                                  "their input, through relu, pooling and flatten.")
fuse_scaled_adds = _pass(_fuse_scaled_adds, "add(a, mul(b, c)) rewritten as torch.add(a, b, alpha=c).")
share_common = _pass(_share_common, "Identical pure computations of the same values computed once.")
direct_calls = _pass(_direct_calls, "Conv and linear modules called as torch functions on their weights.")
to_channels_last = _pass(_to_channels_last, "Channels-last weights and inputs; outputs contiguous.")


__all__ = [
    "compile", "optimize", "drop_dropout", "inline_proxies", "fold_gates", "fold_batchnorm", "fold_scales",
    "fuse_scaled_adds", "share_common", "direct_calls", "to_channels_last", "fold_conv_bn", "fold_linear_bn", "example_inputs",
    "max_abs_diff", "outputs", "interleaved_latency", "median_ratio",
]
