"""Exact rewrites of sums of convolutions and of memory-bound ops, for the inference compilation
(`assembler.inference.optimize` runs them after gates and batch-norm are folded).

NetTailor's tailored networks are sums: relu(alpha_0 block + sum_i alpha_i proxy_i), every
alpha folded into the conv that produces its path. On small inputs every extra conv call
costs more than its arithmetic, so the sum is rewritten with fewer calls:

- `merge_parallel_convs`: convolutions of the *same* value with the same stride, groups and
  dilation, centred alike, summed (a 1x1 proxy beside the 3x3 conv of a block that reads the
  same binding) become one convolution whose kernel is the sum of the centred kernels
  (RepVGG's re-parameterisation; exact up to rounding).
- `merge_identity`: a value summed beside a conv of itself that keeps its shape (a residual
  block's skip beside a proxy of the block's input) becomes that conv with the identity added
  to its kernel's centre (RepVGG's identity branch; exact up to rounding).
- `concat_convs`: 1x1 stride-1 convolutions of *different* values of one spatial size,
  summed, become one 1x1 convolution of their channel concatenation; when every one of
  those values is the same max-pool (one reader each) of its own source, the pooled values are
  concatenated by one `pooled_cat` call, which at small sizes pools the concatenation once
  (a max-pool acts per channel) and at large sizes pools first (less to copy).
- `add_relu`: a ReLU of a sum read only by it becomes ATen's fused add-ReLU (one pass).
- `large_pools`: a max-pool whose windows overlap by at most one row becomes `max_pool`, which
  on large maps takes the elementwise maximum of strided views (no padding copy, no argmax
  indices: up to 2x faster than ATen's kernel there) and on small ones calls that kernel.
- `in_place`: a ReLU or an addition whose first operand is a fresh intermediate that nothing
  else reads writes into it (no new buffer: at batch 256 these ops are memory-bound).

Each works on a GraphModule in place (the caller copies it) and keeps its outputs.
"""

from __future__ import annotations

import functools
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.autograd import forward_ad

# Ops whose output is a new tensor (never a view of an input): safe to overwrite in place.
FRESH_FUNCTIONS = frozenset({torch.conv2d, F.linear, F.max_pool2d, F.avg_pool2d, operator.add, operator.mul,
                             torch.add, torch.cat, torch.relu, torch.sigmoid, torch.tanh, F.gelu})
FRESH_MODULES = (nn.Conv2d, nn.Linear)


def _is_add(n) -> bool:
    return isinstance(n, fx.Node) and n.op == "call_function" and (
        n.target is operator.add and len(n.args) == 2 and not n.kwargs
        or n.target is torch.add and len(n.args) == 2 and set(n.kwargs) <= {"alpha"})


def _terms(node: fx.Node, coef: float, out: list) -> None:
    """The terms (value, coefficient) of a sum tree: adds read only by the add above them."""
    a, b = node.args
    alpha = node.kwargs.get("alpha", 1.0) if node.target is torch.add else 1.0
    for arg, c in ((a, coef), (b, coef * alpha)):
        if _is_add(arg) and len(arg.users) == 1:
            _terms(arg, c, out)
        else:
            out.append((arg, c))


def _conv(gm: fx.GraphModule, n) -> nn.Conv2d | None:
    """The plain Conv2d a node calls (zero padding, integer padding), or None."""
    if not isinstance(n, fx.Node) or n.op != "call_module" or len(n.users) != 1:
        return None
    m = gm.get_submodule(n.target)
    if type(m) is not nn.Conv2d or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    return m


def _roots(gm: fx.GraphModule) -> list[fx.Node]:
    """The top adds of every sum tree."""
    return [n for n in gm.graph.nodes if _is_add(n) and not (len(n.users) == 1 and _is_add(next(iter(n.users))))]


def _rebuild(gm: fx.GraphModule, root: fx.Node, terms: list) -> None:
    """Replace the sum tree at `root` by the sum of `terms` ((value, coefficient) pairs)."""
    graph = gm.graph
    with graph.inserting_before(root):
        value, c = terms[0]
        out = value if c == 1.0 else graph.call_function(operator.mul, (value, c))
        for value, c in terms[1:]:
            out = graph.call_function(operator.add, (out, value)) if c == 1.0 else \
                graph.call_function(torch.add, (out, value), {"alpha": c})
    root.replace_all_uses_with(out)


def _new_conv(gm: fx.GraphModule, where: fx.Node, x, conv: nn.Conv2d, name: str) -> fx.Node:
    target, i = f"{name}_merged", 0
    while hasattr(gm, target):
        i += 1
        target = f"{name}_merged{i}"
    gm.add_submodule(target, conv.requires_grad_(False).eval())
    with gm.graph.inserting_before(where):
        return gm.graph.call_module(target, (x,))


# ---------------------------------------------------------------------------------------------
# Convolutions of the same value


def _centre(m: nn.Conv2d) -> tuple:
    """Where a conv's kernel centre falls relative to its padding (equal for convs whose
    outputs align element by element), or None for an even kernel."""
    if any(k % 2 == 0 for k in m.kernel_size):
        return None
    return tuple(p - (k - 1) // 2 for p, k in zip(m.padding, m.kernel_size))


def merge_parallel_convs(gm: fx.GraphModule) -> None:
    """Convs of one value (same stride, dilation 1, groups, centre) summed -> one conv."""
    def key(value: fx.Node, m: nn.Conv2d):
        if _centre(m) is None or m.dilation != (1, 1):
            return None
        return value.args[0], m.stride, m.groups, m.out_channels, _centre(m)
    _merge_sums(gm, key, lambda group: len(group) > 1, _merged_kernel)


def _merge_sums(gm: fx.GraphModule, key, accept, build) -> None:
    """In every sum tree: group the conv terms by `key(value, conv)` (None: not a candidate),
    and replace each group that `accept` takes by the one node `build(gm, root, members)`
    makes (members: (value, coefficient, conv) triples)."""
    for root in _roots(gm):
        terms: list = []
        _terms(root, 1.0, terms)
        groups: dict[tuple, list] = {}
        for value, c in terms:
            m = _conv(gm, value)
            k = key(value, m) if m is not None else None
            if k is not None:
                groups.setdefault(k, []).append((value, c, m))
        groups = {k: g for k, g in groups.items() if accept(g)}
        if not groups:
            continue
        members = {id(v): k for k, g in groups.items() for v, _, _ in g}
        new_terms, done = [], set()
        for value, c in terms:
            k = members.get(id(value))
            if k is None:
                new_terms.append((value, c))
            elif k not in done:
                done.add(k)
                new_terms.append((build(gm, root, groups[k]), 1.0))
        _rebuild(gm, root, new_terms)


def _merged_kernel(gm: fx.GraphModule, where: fx.Node, members: list) -> fx.Node:
    first = members[0][2]
    kh = max(m.kernel_size[0] for _, _, m in members)
    kw = max(m.kernel_size[1] for _, _, m in members)
    centre = _centre(first)
    pad = (centre[0] + (kh - 1) // 2, centre[1] + (kw - 1) // 2)
    conv = nn.Conv2d(first.in_channels, first.out_channels, (kh, kw), first.stride, pad, groups=first.groups, bias=True)
    with torch.no_grad():
        weight = torch.zeros(conv.weight.shape, dtype=torch.float64)
        bias = torch.zeros(first.out_channels, dtype=torch.float64)
        for _, c, m in members:
            dh, dw = (kh - m.kernel_size[0]) // 2, (kw - m.kernel_size[1]) // 2
            weight[:, :, dh:dh + m.kernel_size[0], dw:dw + m.kernel_size[1]] += c * m.weight.double()
            if m.bias is not None:
                bias += c * m.bias.double()
        conv.weight.copy_(weight.to(first.weight.dtype))
        conv.bias.copy_(bias.to(first.weight.dtype))
    return _new_conv(gm, where, members[0][0].args[0], conv, members[0][0].target.replace(".", "_"))


def merge_identity(gm: fx.GraphModule) -> None:
    """A value summed beside a conv of itself (stride 1, dilation 1, groups 1, as many output
    channels as input, centred so that the output aligns with the input) -> that conv with
    the identity added at its kernel's centre: c * x + d * conv(x) = conv'(x) (RepVGG's
    identity branch; a residual block's skip beside a NetTailor proxy of the same input)."""
    for root in _roots(gm):
        terms: list = []
        _terms(root, 1.0, terms)
        convs = {}
        for value, c in terms:
            m = _conv(gm, value)
            if m is not None and m.stride == (1, 1) and m.dilation == (1, 1) and m.groups == 1 \
                    and m.in_channels == m.out_channels and _centre(m) == (0, 0):
                convs.setdefault(id(value.args[0]), (value, c, m))
        pairs = {}
        for value, c in terms:
            hit = convs.get(id(value)) if isinstance(value, fx.Node) else None
            if hit is not None and id(hit[0]) not in pairs and sum(v is value for v, _ in terms) == 1:
                pairs[id(hit[0])] = (value, c)
        if not pairs:
            continue
        identities = {id(v) for v, _ in pairs.values()}
        new_terms = []
        for value, c in terms:
            if id(value) in identities:
                continue
            if id(value) in pairs:
                x, cx = pairs[id(value)]
                new_terms.append((_with_identity(gm, root, value, c, cx), 1.0))
            else:
                new_terms.append((value, c))
        _rebuild(gm, root, new_terms)


def _with_identity(gm: fx.GraphModule, where: fx.Node, node: fx.Node, c: float, cx: float) -> fx.Node:
    """The conv node computing c * conv(x) + cx * x for the conv `node` of x."""
    m = gm.get_submodule(node.target)
    conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, 1, m.padding, bias=True)
    with torch.no_grad():
        weight = c * m.weight.double()
        kh, kw = m.kernel_size[0] // 2, m.kernel_size[1] // 2
        idx = torch.arange(m.out_channels)
        weight[idx, idx, kh, kw] += cx
        bias = c * m.bias.double() if m.bias is not None else torch.zeros(m.out_channels, dtype=torch.float64)
        conv.weight.copy_(weight.to(m.weight.dtype))
        conv.bias.copy_(bias.to(m.weight.dtype))
    return _new_conv(gm, where, node.args[0], conv, node.target.replace(".", "_"))


def stack_sibling_convs(gm: fx.GraphModule) -> None:
    """Convs of one value with the same geometry (kernel, stride, padding, dilation, groups 1),
    wherever their outputs go -> one conv with their output channels stacked, each reader
    taking its part of one `split` (two proxies of one pooled map, feeding two gates)."""
    siblings: dict[tuple, list] = {}
    for n in gm.graph.nodes:
        m = _conv(gm, n)
        if m is not None and m.groups == 1:
            siblings.setdefault((n.args[0], m.kernel_size, m.stride, m.padding, m.dilation), []).append((n, m))
    for group in (g for g in siblings.values() if len(g) > 1):
        convs = [m for _, m in group]
        conv = nn.Conv2d(convs[0].in_channels, sum(m.out_channels for m in convs), convs[0].kernel_size,
                         convs[0].stride, convs[0].padding, convs[0].dilation, bias=True)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([m.weight for m in convs]))
            conv.bias.copy_(torch.cat([m.bias if m.bias is not None else torch.zeros(m.out_channels)
                                       for m in convs]))
        first = min((n for n, _ in group), key=lambda n: _position(gm, n))
        stacked = _new_conv(gm, first, first.args[0], conv, first.target.replace(".", "_"))
        with gm.graph.inserting_after(stacked):
            parts = gm.graph.call_method("split", (stacked, [m.out_channels for _, m in group], 1))
        for i, (n, _) in enumerate(group):
            with gm.graph.inserting_after(parts):
                part = gm.graph.call_function(operator.getitem, (parts, i))
            n.replace_all_uses_with(part)


def _position(gm: fx.GraphModule, node: fx.Node) -> int:
    return next(i for i, n in enumerate(gm.graph.nodes) if n is node)


# ---------------------------------------------------------------------------------------------
# 1x1 convolutions of different values


def _pointwise(m: nn.Conv2d | None) -> bool:
    return m is not None and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0) \
        and m.groups == 1


def _spatial(n) -> tuple | None:
    meta = n.meta.get("tensor_meta") if isinstance(n, fx.Node) else None
    return tuple(meta.shape[:1]) + tuple(meta.shape[2:]) if meta is not None and len(meta.shape) == 4 else None


def concat_convs(gm: fx.GraphModule) -> None:
    """1x1 convs of different values of one size (batch, H, W) summed -> one 1x1 conv of their
    concatenation; needs shapes in `node.meta["tensor_meta"]` (fx's ShapeProp)."""
    def key(value: fx.Node, m: nn.Conv2d):
        size = _spatial(value.args[0])
        return (size, m.out_channels) if _pointwise(m) and size is not None else None
    _merge_sums(gm, key, lambda group: len({id(v.args[0]) for v, _, _ in group}) == len(group) > 1, _concatenated)


def _concatenated(gm: fx.GraphModule, where: fx.Node, members: list) -> fx.Node:
    sources = [v.args[0] for v, _, _ in members]
    pooled = _common_pool(sources)
    inputs = [s.args[0] for s in sources] if pooled else sources
    out_c = members[0][2].out_channels
    conv = nn.Conv2d(sum(m.in_channels for _, _, m in members), out_c, 1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([c * m.weight.double() for _, c, m in members], dim=1).to(conv.weight.dtype))
        conv.bias.copy_(sum((c * m.bias.double() if m.bias is not None else torch.zeros(out_c, dtype=torch.float64))
                            for _, c, m in members).to(conv.bias.dtype))
    with gm.graph.inserting_before(where):
        if pooled:
            x = gm.graph.call_function(pooled_cat, (list(inputs), *sources[0].args[1:]), dict(sources[0].kwargs))
        else:
            x = gm.graph.call_function(torch.cat, (list(inputs), 1))
    return _new_conv(gm, where, x, conv, members[0][0].target.replace(".", "_"))


# Below this many elements, concatenating first and pooling once is faster (one call instead
# of one per source); above it, pooling first is (the concatenation copies 1/stride^2 of the
# data, and no buffer larger than the sources is allocated).
POOL_CAT_SMALL = 1 << 16


def pooled_cat(tensors: list[torch.Tensor], kernel: int, stride: int, padding: int = 0) -> torch.Tensor:
    """torch.cat([F.max_pool2d(t, kernel, stride, padding) for t in tensors], 1), computed as one
    pool of the concatenation when the tensors are small (a max-pool acts per channel, so both
    orders give the same values). Traced with a symbolic batch (torch.export), it pools first:
    no branch on the batch size."""
    size = 0
    for t in tensors:
        size += t.numel()
    if type(size) is int and size <= POOL_CAT_SMALL:
        return torch.max_pool2d(torch.cat(tensors, 1), kernel, stride, padding)
    pool = max_pool if separable_pool(kernel, stride) else F.max_pool2d
    return torch.cat([pool(t, kernel, stride, padding) for t in tensors], 1)


def _common_pool(sources: list) -> bool:
    """Whether every source is one max-pool (same window) read only here, of a value of one
    size: then one `pooled_cat` computes them together."""
    if not all(isinstance(s, fx.Node) and s.op == "call_function" and s.target is F.max_pool2d and len(s.users) == 1
               and len(s.args) == 4 and not s.kwargs for s in sources):  # (x, kernel, stride, padding)
        return False
    windows = {(tuple(s.args[1:]), tuple(sorted(s.kwargs.items()))) for s in sources}
    sizes = {_spatial(s.args[0]) for s in sources}
    return len(windows) == 1 and len(sizes) == 1 and None not in sizes


# ---------------------------------------------------------------------------------------------
# Max-pools of large maps

# From this many input elements on, running maxima of strided views beat ATen's max-pool kernel
# (which also writes argmax indices) on this CPU: for windows that do not overlap (kernel <=
# stride) and for those that overlap by one (kernel = stride + 1; benchmarks/bench_pool.py).
SEPARABLE_MIN_DISJOINT = 1 << 17
SEPARABLE_MIN_OVERLAP = 1 << 18


def separable_pool(kernel: int, stride: int) -> bool:
    """Whether `max_pool` may compute a kernel x kernel, stride x stride pool as maxima of views:
    a window overlapping its neighbour by more than one row costs more views than it saves."""
    return 1 <= kernel <= stride + 1


def max_pool(x: torch.Tensor, kernel: int, stride: int, padding: int = 0) -> torch.Tensor:
    """F.max_pool2d(x, kernel, stride, padding), square windows, dilation 1, floor mode. On a
    large map (see SEPARABLE_MIN_*) it is computed along H, then along W, as the elementwise
    maximum of the k strided views that hold each window's rows (the views clipped at the
    borders instead of padded): the same values and NaNs (a window holding both -0.0 and 0.0
    may give either), without a padding copy or argmax indices. Otherwise (a small map, another
    device or layout, quantized or bool values, arguments that are not plain ints in the
    kernel's range, gradients to record, forward-mode AD, a symbolic size, or a function
    transform that rejects `out=`) it is ATen's kernel, `torch.max_pool2d`, which F.max_pool2d
    calls."""
    size = x.numel()
    if type(size) is int and type(kernel) is int and type(stride) is int and type(padding) is int \
            and stride >= 1 and 0 <= padding <= kernel // 2 \
            and size >= (SEPARABLE_MIN_OVERLAP if kernel > stride else SEPARABLE_MIN_DISJOINT) \
            and x.dim() == 4 and x.device.type == "cpu" and x.layout is torch.strided and not x.is_quantized \
            and x.dtype is not torch.bool and not (x.requires_grad and torch.is_grad_enabled()) \
            and forward_ad.unpack_dual(x).tangent is None:
        rows, cols = _plan(x.shape[2], kernel, stride, padding), _plan(x.shape[3], kernel, stride, padding)
        if rows is not None and cols is not None:
            try:
                return _max_along(_max_along(x, 2, stride, padding, rows), 3, stride, padding, cols)
            except (NotImplementedError, RuntimeError):  # e.g. under vmap: no batching rule for maximum.out
                pass
    return torch.max_pool2d(x, kernel, stride, padding)


@functools.lru_cache(maxsize=256)
def _plan(n: int, k: int, s: int, p: int) -> tuple | None:
    """How `_max_along` pools a length n: (m outputs, two window offsets valid for every
    output, then (offset, first, last output) for the offsets the borders clip); None when
    fewer than two offsets are valid everywhere (then there is no fresh tensor to start from)."""
    m = (n + 2 * p - k) // s + 1
    if m < 1:
        return None
    spans = []
    for d in range(k):  # offset d reads input index i*s - p + d for output i
        first, last = max(0, -((d - p) // s)), min(m - 1, (n - 1 + p - d) // s)
        if first <= last:
            spans.append((d, first, last))
    whole = [d for d, first, last in spans if (first, last) == (0, m - 1)]
    if len(whole) < 2:
        return None
    return m, whole[0], whole[1], tuple(t for t in spans if t[0] not in whole[:2])


def _max_along(x: torch.Tensor, dim: int, s: int, p: int, plan: tuple) -> torch.Tensor:
    m, a, b, clipped = plan
    step = (slice(None),) * dim + (slice(None, None, s),)

    def view(d: int, first: int, last: int) -> torch.Tensor:
        return x.narrow(dim, first * s - p + d, (last - first) * s + 1)[step]

    out = torch.maximum(view(a, 0, m - 1), view(b, 0, m - 1))
    for d, first, last in clipped:
        part = out.narrow(dim, first, last - first + 1)
        torch.maximum(part, view(d, first, last), out=part)
    return out


# ---------------------------------------------------------------------------------------------
# In place


def _fresh(gm: fx.GraphModule, n) -> bool:
    """A value computed here into a new buffer, read by one node only."""
    if not isinstance(n, fx.Node) or len(n.users) != 1:
        return False
    if n.op == "call_method" and n.target == "add_":  # in place on a fresh value: fresh
        return True
    if n.op == "call_function":
        return n.target in FRESH_FUNCTIONS
    return n.op == "call_module" and isinstance(gm.get_submodule(n.target), FRESH_MODULES)


def in_place(gm: fx.GraphModule) -> None:
    """relu(x) -> relu_(x), a + b -> a.add_(b) where x (or a) is fresh and read only there
    (and, for the addition, as large as the result: no broadcast into it)."""
    for n in list(gm.graph.nodes):
        if n.op != "call_function":
            continue
        if n.target is torch.relu and _fresh(gm, n.args[0]):
            n.target = torch.relu_
        elif _is_add(n) and _fresh(gm, n.args[0]) and isinstance(n.args[1], fx.Node) and _same_shape(n.args[0], n):
            alpha = n.kwargs.get("alpha", 1.0) if n.target is torch.add else 1.0
            with gm.graph.inserting_before(n):
                new = gm.graph.call_method("add_", n.args, {"alpha": alpha} if alpha != 1.0 else {})
            new.meta = dict(n.meta)
            n.replace_all_uses_with(new)
            gm.graph.erase_node(n)


# ATen's fused add + ReLU (one pass over memory, one call), where this torch build has it.
_ADD_RELU, _ADD_RELU_ = getattr(torch, "_add_relu", None), getattr(torch, "_add_relu_", None)


def add_relu(gm: fx.GraphModule) -> None:
    """relu(a + b) -> torch._add_relu(a, b) (relu_(a.add_(b)) -> torch._add_relu_(a, b)) where the
    sum is read only by the ReLU: one kernel instead of two (`in_place` runs first)."""
    if _ADD_RELU is None or _ADD_RELU_ is None:
        return
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in (torch.relu, torch.relu_) or len(n.args) != 1:
            continue
        x = n.args[0]
        if not isinstance(x, fx.Node) or len(x.users) != 1:
            continue
        if x.op == "call_method" and x.target == "add_" and isinstance(x.args[1], fx.Node):
            fused, kwargs = _ADD_RELU_, dict(x.kwargs)
        elif _is_add(x) and isinstance(x.args[0], fx.Node) and isinstance(x.args[1], fx.Node):
            fused, kwargs = _ADD_RELU, ({"alpha": x.kwargs["alpha"]} if x.kwargs.get("alpha", 1.0) != 1.0 else {})
        else:
            continue
        with gm.graph.inserting_before(n):
            new = gm.graph.call_function(fused, tuple(x.args), kwargs)
        new.meta = dict(n.meta)
        n.replace_all_uses_with(new)
        gm.graph.erase_node(n)
        gm.graph.erase_node(x)


def large_pools(gm: fx.GraphModule) -> None:
    """F.max_pool2d(x, k, s, p) -> max_pool(x, k, s, p) where `separable_pool(k, s)`: the same
    kernel on small maps, maxima of views on large ones (decided per call, by size)."""
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is F.max_pool2d and len(n.args) == 4 and not n.kwargs \
                and all(type(a) is int for a in n.args[1:]) and separable_pool(n.args[1], n.args[2]):
            n.target = max_pool


def _same_shape(a: fx.Node, out: fx.Node) -> bool:
    ma, mo = a.meta.get("tensor_meta"), out.meta.get("tensor_meta")
    return ma is not None and mo is not None and tuple(ma.shape) == tuple(mo.shape) and ma.dtype == mo.dtype


__all__ = ["merge_parallel_convs", "merge_identity", "stack_sibling_convs", "concat_convs", "in_place", "add_relu",
           "pooled_cat", "max_pool", "large_pools"]
