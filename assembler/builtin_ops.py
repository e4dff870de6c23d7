"""The built-in ops and merges of section 5 of the language reference, one entry each: shape
rule, counts, picture label and the spec generator's argument sampler.

Counting conventions (decision 2 of the reference): biases are not counted; normalisations
count one (batch-norm) or two (layer-norm) per element, activations one per element, pools k*k
per output element, `gap` one per input element, `add`/`mul` n-1 and `gate` n per element (n+1
with `mix="relu"`); the proxy counts its parts so (its max-pool, 1x1 conv and batch-norm);
`cat`, `flatten`, `identity`, `dropout` nothing.
"""

from __future__ import annotations

import math

from .optypes import Arg, Chooser, Merge, Op, OpError, Shape
from .signature import non_negative, one_of, positive, probability

# ---------------------------------------------------------------------------------------------
# Shape rules


def _spatial(op: str, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise OpError(f"'{op}' needs a [channels, height, width] input, got {list(shape)}",
                      hint="images are [C, H, W]; 'gap' or 'flatten' turns them into vectors")
    return shape


def _window(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _pooled(op: str, shape: Shape, k: int, stride: int, pad: int) -> Shape:
    c, h, w = _spatial(op, shape)
    if pad > k // 2:
        raise OpError(f"'{op}' padding {pad} is more than half its kernel {k}", arg="pad")
    oh, ow = _window(h, k, stride, pad), _window(w, k, stride, pad)
    if oh < 1 or ow < 1:
        raise OpError(f"'{op}({k})' of a {h}x{w} input leaves nothing (output {max(oh, 0)}x{max(ow, 0)})",
                      hint="use a smaller kernel or pool earlier in the network less")
    return (c, oh, ow)


def _conv_infer(s: Shape, a: dict) -> Shape:
    c, h, w = _spatial("conv", s)
    if c % a["groups"] or a["out"] % a["groups"]:
        raise OpError(f"'conv' groups={a['groups']} must divide both the input channels ({c}) and out ({a['out']})",
                      arg="groups")
    oh, ow = _window(h, a["k"], a["stride"], a["pad"]), _window(w, a["k"], a["stride"], a["pad"])
    if oh < 1 or ow < 1:
        raise OpError(f"'conv' with kernel {a['k']} on a {h}x{w} input leaves nothing",
                      hint="add padding (pad=...) or use a smaller kernel")
    return (a["out"], oh, ow)


def _conv_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    per_out = (s[0] // a["groups"]) * a["k"] * a["k"]
    params = a["out"] * per_out + (a["out"] if a["bias"] else 0)
    return params, o[0] * o[1] * o[2] * per_out


def _linear_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    params = s[-1] * a["out"] + (a["out"] if a["bias"] else 0)
    return params, math.prod(s[:-1]) * s[-1] * a["out"]


def _batchnorm_infer(s: Shape, a: dict) -> Shape:
    if len(s) > 3:
        raise OpError(f"'batchnorm' takes inputs of at most 3 dimensions ([C], [C, L] or [C, H, W]), got {list(s)}")
    return s


def _softmax_infer(s: Shape, a: dict) -> Shape:
    if not -len(s) <= a["dim"] < len(s):
        raise OpError(f"'softmax' dim={a['dim']} is out of range for a {len(s)}-d input {list(s)}", arg="dim")
    return s


def _upsample_infer(s: Shape, a: dict) -> Shape:
    c, h, w = _spatial("upsample", s)
    return (c, h * a["scale"], w * a["scale"])


def _proxy_infer(s: Shape, a: dict) -> Shape:
    c, h, w = _spatial("proxy", s)
    st = a["stride"]
    if st > 1:
        c, h, w = _pooled("proxy", s, st + 1, st, st // 2)
    return (a["c"], h, w)


def _proxy_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    """Its max-pool (k*k per pooled element, k = stride + 1), 1x1 conv and batch-norm (one per
    output element), as the ops `maxpool`, `conv` and `batchnorm` count."""
    conv = s[0] * a["c"]
    pool = s[0] * o[1] * o[2] * (a["stride"] + 1) ** 2 if a["stride"] > 1 else 0
    return conv + 2 * a["c"], pool + o[1] * o[2] * conv + math.prod(o)


def _per_element(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    return 0, math.prod(s)


def _pool_count(s: Shape, a: dict, o: Shape) -> tuple[int, int]:
    return 0, math.prod(o) * a["k"] * a["k"]


def _pool_infer(name: str):
    return lambda s, a: _pooled(name, s, a["k"], a["stride"] or a["k"], a["pad"])


# ---------------------------------------------------------------------------------------------
# Samplers: valid arguments on a shape, for the spec generator (None: the op does not apply)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _anywhere(s: Shape, c: Chooser, preserve: bool) -> dict:
    return {}


def _sample_conv(s: Shape, c: Chooser, preserve: bool) -> dict | None:
    if len(s) != 3:
        return None
    ch, h, w = s
    groups = c.pick(_divisors(ch))
    if preserve:
        k = c.pick([1, 3, 5])
        return {"out": ch, "k": k, "pad": k // 2, "groups": groups, "bias": c.boolean()}
    k = c.integer(1, 5)
    pad = c.integer(0, k // 2) if max(h, w) < c.max_spatial else 0
    k = min(k, min(h, w) + 2 * pad)
    out = groups * c.integer(1, max(1, 16 // groups))
    return {"out": out, "k": k, "stride": c.integer(1, 3), "pad": pad, "groups": groups, "bias": c.boolean()}


def _sample_linear(s: Shape, c: Chooser, preserve: bool) -> dict | None:
    if preserve and len(s) == 3:
        return None
    return {"out": s[-1] if preserve else c.integer(1, 16), "bias": c.boolean()}


def _sample_pool(s: Shape, c: Chooser, preserve: bool) -> dict | None:
    if len(s) != 3:
        return None
    if preserve:
        return {"k": 3, "stride": 1, "pad": 1} if c.chance(0.5) else {"k": 1}
    k = c.integer(1, 4)
    pad = c.integer(0, k // 2)
    k = min(k, min(s[1], s[2]) + 2 * pad)
    return {"k": k, "stride": None if c.chance(0.5) else c.integer(1, k), "pad": pad}


def _sample_proxy(s: Shape, c: Chooser, preserve: bool) -> dict | None:
    if len(s) != 3:
        return None
    if preserve:
        return {"c": s[0]}
    stride = c.integer(1, 3)
    while stride > 1 and min(s[1], s[2]) + 2 * (stride // 2) < stride + 1:
        stride -= 1
    return {"c": c.integer(1, 16), "stride": stride}


def _sample_upsample(s: Shape, c: Chooser, preserve: bool) -> dict | None:
    if len(s) != 3:
        return None
    scale = 1 if preserve or 2 * max(s[1], s[2]) > c.max_spatial else c.integer(1, 2)
    return {"scale": scale, "mode": c.pick(["nearest", "bilinear"])}


def _sample_dropout(s: Shape, c: Chooser, preserve: bool) -> dict:
    p = c.pick([0.5, 0.1, 0.0, 0, "any"])
    return {"p": c.floating(0, 1, exclude_max=True) if p == "any" else p}


def _sample_softmax(s: Shape, c: Chooser, preserve: bool) -> dict:
    return {"dim": c.integer(-len(s), len(s) - 1)}


def _sample_gap(s: Shape, c: Chooser, preserve: bool) -> dict | None:
    return None if preserve or len(s) != 3 else {}


def _sample_flatten(s: Shape, c: Chooser, preserve: bool) -> dict | None:
    return None if preserve or math.prod(s) > c.max_numel else {}


def _conv_label(a: dict) -> str:
    stride = f" /{a['stride']}" if a.get("stride") not in (None, 1) else ""
    return f"conv {a.get('k')}x{a.get('k')} {a.get('out')}{stride}"


_SIMPLE = [("relu", "rectified linear unit"), ("gelu", "Gaussian error linear unit"), ("sigmoid", "logistic sigmoid"),
           ("tanh", "hyperbolic tangent"), ("identity", "the input unchanged")]

OPS = [
    Op("conv", (Arg("out", int, check=positive), Arg("k", int, check=positive), Arg("stride", int, 1, positive),
                Arg("pad", int, 0, non_negative), Arg("groups", int, 1, positive), Arg("bias", bool, True)),
       _conv_infer, _conv_count, "2-d convolution", module=True, label=_conv_label, sample=_sample_conv, weight=4),
    Op("linear", (Arg("out", int, check=positive), Arg("bias", bool, True)), lambda s, a: s[:-1] + (a["out"],),
       _linear_count, "fully connected layer over the last dimension", module=True,
       label=lambda a: f"linear {a.get('out')}", sample=_sample_linear, weight=2),
    Op("batchnorm", (), _batchnorm_infer, lambda s, a, o: (2 * s[0], math.prod(s)),
       "batch normalisation over channels (dim 0)", module=True, label="bn", sample=_anywhere),
    Op("layernorm", (), lambda s, a: s, lambda s, a, o: (2 * s[-1], 2 * math.prod(s)),
       "layer normalisation over the last dimension", module=True, label="ln", sample=_anywhere),
    *(Op(name, (), count=_per_element, doc=doc, label=name, sample=_anywhere) for name, doc in _SIMPLE[:4]),
    Op("identity", (), doc="the input unchanged", label="identity", sample=_anywhere),
    Op("softmax", (Arg("dim", int, 0),), _softmax_infer, _per_element, "softmax; dim counts without the batch",
       label="softmax", sample=_sample_softmax),
    Op("maxpool", (Arg("k", int, check=positive), Arg("stride", int, None, positive), Arg("pad", int, 0, non_negative)),
       _pool_infer("maxpool"), _pool_count, "max pooling", label="maxpool", sample=_sample_pool),
    Op("avgpool", (Arg("k", int, check=positive), Arg("stride", int, None, positive), Arg("pad", int, 0, non_negative)),
       _pool_infer("avgpool"), _pool_count, "average pooling", label="avgpool", sample=_sample_pool),
    Op("gap", (), lambda s, a: (_spatial("gap", s)[0],), _per_element, "global average pool, then flatten",
       label="gap", sample=_sample_gap, weight=2),
    Op("flatten", (), lambda s, a: (math.prod(s),), doc="flatten to a vector", label="flatten", sample=_sample_flatten),
    Op("dropout", (Arg("p", float, check=probability),), doc="dropout with probability p", module=True,
       label="dropout", sample=_sample_dropout),
    Op("upsample", (Arg("scale", int, check=positive), Arg("mode", str, "nearest", one_of("nearest", "bilinear"))),
       _upsample_infer, lambda s, a, o: (0, math.prod(o)), "upsampling by a whole factor", label="upsample",
       sample=_sample_upsample),
    Op("proxy", (Arg("c", int, check=positive), Arg("stride", int, 1, positive)), _proxy_infer, _proxy_count,
       "NetTailor's lean proxy: max-pool when stride > 1, bias-free 1x1 conv, batch-norm", module=True,
       label=lambda a: f"proxy {a.get('c')}", sample=_sample_proxy, role="proxy"),
]


# ---------------------------------------------------------------------------------------------
# Merges


def _equal(name: str):
    def infer(shapes: list[Shape], a: dict) -> Shape:
        for i, s in enumerate(shapes[1:], 1):
            if s != shapes[0]:
                raise OpError(f"'{name}' merges chains of unequal shapes: {list(shapes[0])} and {list(s)}", path=i,
                              hint="every path of add, mul and gate must give the same shape")
        return shapes[0]
    return infer


def _cat_infer(shapes: list[Shape], a: dict) -> Shape:
    dim, first = a["dim"], shapes[0]
    rank = len(first)
    if not -rank <= dim < rank:
        raise OpError(f"'cat' dim={dim} does not exist: the inputs have {rank} dimension(s) {list(first)}",
                      hint="dim counts without the batch dimension, from 0")
    d = dim % rank
    for i, s in enumerate(shapes):
        if len(s) != rank or any(x != y for j, (x, y) in enumerate(zip(s, first)) if j != d):
            raise OpError(f"'cat' along dim {dim} needs equal sizes elsewhere: {list(first)} and {list(s)}", path=i)
    return first[:d] + (sum(s[d] for s in shapes),) + first[d + 1:]


def _gate_complete(a: dict, n: int) -> dict:
    """The gate's logits: one number per path, 2 for the first and -2 for the others by default."""
    init = a.get("init")
    if init is None:
        return {**a, "init": [2.0] + [-2.0] * (n - 1)}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in init):
        raise OpError("'gate' init must be a list of numbers, one logit per path", arg="init")
    if len(init) != n:
        raise OpError(f"'gate' init has {len(init)} value(s) for {n} paths", arg="init")
    return {**a, "init": [float(v) for v in init]}


def _gate_count(shapes: list[Shape], a: dict, o: Shape) -> tuple[int, int]:
    """n logits; n multiply-adds per element, one more for the ReLU of `mix="relu"`."""
    n = len(shapes)
    return n, (n + (a.get("mix") == "relu")) * math.prod(o)


def _gate_label(a: dict) -> str:
    return "gate+relu" if a.get("mix") == "relu" else "gate"


def _sample_gate(n: int, s: Shape, c: Chooser) -> dict:
    out = {"mix": "relu"} if c.chance(0.3) else {}
    if not c.chance(0.5):
        return out
    init = [c.pick([2, -2, 0, 1.5, "float"]) for _ in range(n)]
    return {**out, "init": [c.floating(-8, 8) if v == "float" else v for v in init]}


def _combine_count(per_element: int):
    """(params, FLOPs) of a merge that does `per_element(n)` multiply-adds per output element."""
    return lambda shapes, a, o: (0, per_element(len(shapes)) * math.prod(o))


MERGES = [
    Merge("add", (), _equal("add"), _combine_count(lambda n: n - 1), "element-wise sum of the paths", label="add",
          sample=lambda n, s, c: {}),
    Merge("mul", (), _equal("mul"), _combine_count(lambda n: n - 1), "element-wise product of the paths", label="mul",
          sample=lambda n, s, c: {}),
    Merge("cat", (Arg("dim", int, 0),), _cat_infer, lambda shapes, a, o: (0, 0),
          "concatenation along dim (counted without the batch)", label="cat", sample=lambda n, s, c: {},
          paths="concat"),
    Merge("gate", (Arg("init", list, None), Arg("mix", str, "sum", one_of("sum", "relu"))), _equal("gate"),
          _gate_count, "NetTailor's gate: sum_i softmax(logits)_i * path_i; with mix=\"relu\", relu of that sum, "
          "each path's own final relu moved after the mix", module=True, label=_gate_label, sample=_sample_gate,
          role="gate", complete=_gate_complete),
]
