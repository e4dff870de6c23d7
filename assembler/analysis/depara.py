"""DEPARA (Song et al., CVPR 2020): a deep attribution graph per layer, compared between a
source layer and the target model's encoder layer.

On n probe images, the graph of a layer F has
- nodes: the attribution map of each image, Gradient*Input, v = x * d s(F(x)) / dx (eq. 3),
  where s is the paper's l2 norm |F(x)| (or the reference code's signed mean, on request);
  `features.py` computes them;
- edges: the cosine similarity of every pair of images' features F(x_p), F(x_q) (eq. 4).

Two graphs G1, G2 on the same probes are compared by (eq. 5)
    s_V = 1/n sum_k cos(v1_k, v2_k)            (per image, then averaged)
    s_E = Spearman correlation of the edge vectors
    s   = s_V + lambda * s_E
Model selection ranks sources by s; layer selection takes argmax_k s(G_k, G_target) (eq. 6).

Spearman is the Pearson correlation of the ranks, ties getting their average rank; without
ties it equals the paper's 1 - 6 sum d^2 / (n^3 - n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Similarity", "rankdata", "spearman", "edges", "node_cosines", "RankedEdges"]

_EPS = 1e-12  # below this norm a vector counts as zero: its cosine with anything is 0


@dataclass(frozen=True)
class Similarity:
    """The similarity of one source layer's graph to the target's."""

    nodes: float  # s_V: mean per-image cosine of the attribution maps
    edges: float  # s_E: Spearman correlation of the edge weights

    def score(self, lam: float) -> float:
        """s_V + lambda * s_E (eq. 5)."""
        return self.nodes + lam * self.edges


def rankdata(values) -> np.ndarray:
    """1-based ranks of a vector, ties getting the mean of the ranks they span."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # Start of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(v))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


class RankedEdges:
    """One graph's edge vector reduced to centred, unit-length ranks, so Spearman against it
    is a dot product."""

    def __init__(self, edge_values):
        r = rankdata(edge_values)
        r -= r.mean()
        norm = np.linalg.norm(r)
        self.unit = r / norm if norm > 0 else r  # all ties: no ordering, correlates with nothing
        self.size = len(r)

    def spearman(self, other: "RankedEdges") -> float:
        if other.size != self.size:
            raise ValueError(f"edge vectors differ in length: {self.size} and {other.size}")
        return float(np.clip(self.unit @ other.unit, -1.0, 1.0))


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equally long vectors (0 when either is constant)."""
    return RankedEdges(a).spearman(RankedEdges(b))


def edges(features: torch.Tensor) -> np.ndarray:
    """Cosine similarities of every pair p < q of probe features [n, D]: n(n-1)/2 values in
    row-major order of the upper triangle."""
    f = features.reshape(len(features), -1).to(torch.float64)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(_EPS)
    gram = f @ f.T
    p, q = torch.triu_indices(len(f), len(f), offset=1)
    return gram[p, q].numpy()


def node_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity of two batches of attribution maps [b, ...] (0 where
    either map is zero: a layer whose output does not depend on the image)."""
    a = a.reshape(len(a), -1).to(torch.float64)
    b = b.reshape(len(b), -1).to(torch.float64)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    dot = (a * b).sum(dim=1)
    return torch.where((na > _EPS) & (nb > _EPS), dot / (na * nb).clamp_min(_EPS), torch.zeros_like(dot))
