"""Matching edges (`match ... : WEIGHTING`) as modules holding their trainable parts.

Each edge maps (source features S_m, target features T_n) to a per-sample loss [N]:
  l2         ||T_n - S_m||^2 (element mean), shapes equal: NetTailor's teacher term
  fitnet     ||r(T_n) - S_m||^2 with a trainable 1x1 conv r (C_t -> C_s), the source bilinearly
             resized to the target's size when they differ (as L2T-ww's reference FM does)
  attention  attention transfer: || a(S) - a(T) ||^2 with a(F) = normalise(mean_c F^2)
  meta       L2T-ww: lambda * sum_c w_c * mean_hw (S_m - r(T_n))^2 with w = softmax(f(gap S_m)) and
             lambda = relu6(g(gap S_m)) from per-pair meta-networks (f zero-initialised, g's bias 1),
             the source resized to the target's size as in fitnet; `where=false` fixes lambda = 1
             (L2T-w: learned what, hand-chosen where)

The source side is resized rather than the target because the reference code of L2T-ww
(alinlab/L2T-ww, `FeatureMatching`) does so: the squared error is averaged over the target's
positions, and the target's features reach the loss without interpolation.

The weightings' front-end entries (options, shape needs) are in `weightings.py`; each name
there gets its module builder here through `register_edge`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .graph import Edge


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class L2Edge(nn.Module):
    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (t - s).pow(2).flatten(1).mean(1)


class FitNetEdge(nn.Module):
    def __init__(self, c_source: int, c_target: int):
        super().__init__()
        self.regressor = nn.Conv2d(c_target, c_source, 1)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = self.regressor(t)
        return (r - _resize(s, r.shape[-2:])).pow(2).flatten(1).mean(1)


class AttentionEdge(nn.Module):
    @staticmethod
    def attention(f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _resize(t, s.shape[-2:])
        return (self.attention(s) - self.attention(t)).pow(2).mean(1)


def _mlp(c_in: int, c_out: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(c_in, c_out)
    return nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, c_out))


class MetaEdge(nn.Module):
    """L2T-ww's weighted feature matching; `weights` (what) and `lam` (where, absent when
    `where` is False: lambda = 1) are meta-parameters, `regressor` is trained with the target."""

    def __init__(self, c_source: int, c_target: int, hidden: int = 0, where: bool = True):
        super().__init__()
        self.regressor = nn.Conv2d(c_target, c_source, 1)
        self.weights = _mlp(c_source, c_source, hidden)
        last_w = self.weights if isinstance(self.weights, nn.Linear) else self.weights[-1]
        nn.init.zeros_(last_w.weight)  # uniform channel weights 1/C_s at the start
        nn.init.zeros_(last_w.bias)
        self.lam = None
        if where:
            self.lam = _mlp(c_source, 1, hidden)
            last_l = self.lam if isinstance(self.lam, nn.Linear) else self.lam[-1]
            nn.init.constant_(last_l.bias, 1.0)  # lambda starts near 1 (weights: torch's default init)

    def meta_parameters(self):
        return list(self.weights.parameters()) + ([] if self.lam is None else list(self.lam.parameters()))

    def channel_weights(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w [N, C_s], lambda [N]) from the globally average-pooled source features."""
        pooled = s.mean(dim=(-2, -1))
        w = torch.softmax(self.weights(pooled), dim=1)
        lam = pooled.new_ones(pooled.shape[0]) if self.lam is None else F.relu6(self.lam(pooled)).squeeze(1)
        return w, lam

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = self.regressor(t)
        d = (_resize(s, r.shape[-2:]) - r).pow(2).mean(dim=(-2, -1))  # [N, C_s]
        w, lam = self.channel_weights(s)
        return lam * (w * d).sum(1)


EDGES: dict[str, Callable[[Edge], nn.Module]] = {}


def register_edge(weighting: str, build: Callable[[Edge], nn.Module]) -> None:
    """Attach the module of a weighting of `weightings.WEIGHTINGS` (registering again replaces it)."""
    EDGES[weighting] = build


def build_edge(edge: Edge) -> nn.Module:
    """The module of one checked matching edge."""
    if edge.weighting not in EDGES:
        raise KeyError(f"weighting '{edge.weighting}' has no edge module; register one with register_edge")
    return EDGES[edge.weighting](edge)


register_edge("l2", lambda e: L2Edge())
register_edge("fitnet", lambda e: FitNetEdge(e.source_shape[0], e.target_shape[0]))
register_edge("attention", lambda e: AttentionEdge())
register_edge("meta", lambda e: MetaEdge(e.source_shape[0], e.target_shape[0], e.options.get("hidden", 0),
                                            e.options.get("where", True)))
