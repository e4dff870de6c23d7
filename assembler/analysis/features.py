"""What a network shows of a probe set, one batch at a time: each chosen layer's features
(flattened, average-pooled when large) and, for DEPARA, each layer's attribution map of every
probe image, x * d s(F(x)) / dx, Gradient*Input (eq. 3 of DEPARA).

Memory stays bounded by the probe set, not by the network: per layer only the pooled
features [n, <= max_dim] are kept; attribution maps are compared with the target's batch by
batch and dropped. Each layer's gradient comes from its own `torch.autograd.grad` call on a
fresh input leaf per batch and per model, so nothing accumulates across layers or models
(the reference code let the input's `.grad` sum over all layers and both models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from ..errors import DataError, Diagnostic, SpecError
from .depara import node_cosines

__all__ = ["Probe", "probe_set", "probe_from_flag", "Streamed", "stream", "flat_features", "layer_scalar", "SCALARS"]

SCALARS = ("norm", "mean")  # the scalar of F(x) whose input gradient gives the attribution
MAX_DIM = 4096  # features kept per probe and layer; larger maps are average-pooled down


@dataclass(frozen=True)
class Probe:
    """The probe images (and their labels, for LogME and LEEP), in a fixed order."""

    x: torch.Tensor  # [n, C, H, W] float32
    y: torch.Tensor  # [n] int64
    name: str  # the data source as written


def probe_set(dataset, limit: int | None = None, seed: int = 0) -> Probe:
    """The first `limit` samples of a seeded permutation of `dataset`, back in file order, so
    the same call always probes with the same images."""
    n = len(dataset.x)
    index = np.arange(n)
    if limit is not None and limit < n:
        index = np.sort(np.random.default_rng(seed).permutation(n)[:limit])
    pick = torch.from_numpy(index)
    return Probe(dataset.x[pick].float().contiguous(), dataset.y[pick].long().contiguous(), dataset.name)


def probe_from_flag(text: str, limit: int | None = None, seed: int = 0, base_dir: str | Path = ".") -> Probe:
    """The probe set a `--probe` data source names, e.g. `digits(split="test", classes=[5, 6])`;
    errors are located at the flag."""
    from .. import data as data_mod
    from .. import settings as settings_mod
    from ..parser import parse_fragment
    try:
        call = settings_mod.call(parse_fragment(text, "value", "--probe"), "data",
                                 settings_mod.SectionScope(set(), set(), {}, set()))
        dataset = data_mod.load(call, base_dir)
    except settings_mod._Bad as e:  # the registry's check of the call: no place of its own
        raise DataError(Diagnostic(f"--probe {text}: {e.diag.message}", "--probe", hint=e.diag.hint)) from None
    except SpecError as e:
        raise DataError(Diagnostic(f"--probe {text}: {e.message}", "--probe", hint=e.diagnostics[0].hint)) from None
    if len(dataset.y) < 2:
        raise DataError(Diagnostic(f"--probe {text}: gives {len(dataset.y)} sample(s); ranking needs at least 2",
                                   "--probe"))
    return probe_set(dataset, limit, seed)


def flat_features(t: torch.Tensor, max_dim: int = MAX_DIM) -> torch.Tensor:
    """A batch of layer outputs as vectors [b, D]: vectors as they are, feature maps
    flattened after average pooling to the largest square grid with C*h*w <= max_dim (at
    least 1x1), so a wide early layer costs no more than a late one."""
    if t.dim() == 4 and t[0].numel() > max_dim:
        c, h, w = t.shape[1:]
        side = max(1, int(math.isqrt(max(max_dim // c, 1))))
        t = F.adaptive_avg_pool2d(t, (min(side, h), min(side, w)))
    return t.reshape(len(t), -1)


def layer_scalar(t: torch.Tensor, scalar: str) -> torch.Tensor:
    """One number per image whose input gradient is the attribution: the l2 norm of the
    layer's output (the paper's eq. 3) or its signed mean (the reference code)."""
    flat = t.reshape(len(t), -1)
    if scalar == "norm":
        return torch.linalg.vector_norm(flat, dim=1)
    if scalar == "mean":
        return flat.mean(dim=1)
    raise ValueError(f"unknown scalar '{scalar}': use one of {', '.join(SCALARS)}")


@dataclass
class Streamed:
    """What one pass over the probes gave."""

    features: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> [n, D] float32
    node_cosines: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> [n] vs the reference
    nodes: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> [n, P], when kept
    probabilities: torch.Tensor | None = None  # softmax of the first output [n, Z], when a vector


def stream(gm: fx.GraphModule, probe: Probe, layers: Sequence[str], *, batch: int = 100,
           scalar: str | None = None, reference: torch.Tensor | None = None, keep_nodes: Sequence[str] = (),
           max_dim: int = MAX_DIM) -> Streamed:
    """Run a tapped network (`asm.network(name, taps=layers)`) over the probes in batches.

    With `scalar`, attribution maps are computed per layer and either compared with
    `reference` ([n, ...], the target's maps: per-image cosines are kept) or kept whole for
    the layers in `keep_nodes`. The network runs in eval mode; its mode is restored after."""
    was_training = gm.training
    gm.eval()
    parts = _Parts(layers, keep_nodes)
    try:
        for start in range(0, len(probe.x), batch):
            xb = probe.x[start:start + batch]
            ref = reference[start:start + len(xb)] if reference is not None else None
            _batch(gm, xb, layers, scalar, ref, max_dim, parts)
    finally:
        gm.train(was_training)
    return parts.result()


class _Parts:
    """Per-batch pieces, concatenated at the end."""

    def __init__(self, layers: Sequence[str], keep_nodes: Sequence[str]):
        self.features = {k: [] for k in layers}
        self.cosines = {k: [] for k in layers}
        self.nodes = {k: [] for k in keep_nodes}
        self.probabilities = []

    def result(self) -> Streamed:
        return Streamed(features={k: torch.cat(v) for k, v in self.features.items()},
                        node_cosines={k: torch.cat(v) for k, v in self.cosines.items() if v},
                        nodes={k: torch.cat(v) for k, v in self.nodes.items()},
                        probabilities=torch.cat(self.probabilities) if self.probabilities else None)


def _batch(gm, xb, layers, scalar, reference, max_dim, parts: _Parts) -> None:
    attribute = scalar is not None
    # A fresh leaf per batch and model: gradients from earlier calls cannot leak in.
    x = xb.detach().clone().requires_grad_(attribute)
    with torch.set_grad_enabled(attribute):
        outputs, taps = gm(x)
    first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    if first.dim() == 2:
        parts.probabilities.append(torch.softmax(first.detach().float(), dim=1))
    for k in layers:
        f = taps[k]
        parts.features[k].append(flat_features(f.detach().float(), max_dim))
        if not attribute:
            continue
        node = x.detach() * _input_gradient(f, x, scalar)
        if reference is not None:
            parts.cosines[k].append(node_cosines(node, reference))
        if k in parts.nodes:
            parts.nodes[k].append(node)


def _input_gradient(f: torch.Tensor, x: torch.Tensor, scalar: str) -> torch.Tensor:
    """d s(F(x)) / dx for each image of the batch (images are independent in eval mode, so
    the gradient of the batch sum is each image's own gradient)."""
    if not f.requires_grad:  # the layer does not depend on the input at all
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(layer_scalar(f, scalar).sum(), x, retain_graph=True)
    return g
