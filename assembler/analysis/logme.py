"""LogME (You et al., ICML 2021): the log of the maximum evidence of a Bayesian linear model
on a layer's features, per class, as a transferability score.

For one class c, the target is the one-hot column y (n values) and the model is
    y = F m + noise,   m ~ N(0, I / alpha),   noise ~ N(0, I / beta)
with F the n x D feature matrix. The evidence p(y | F, alpha, beta) has a closed form; LogME
maximises it over alpha and beta with the fixed-point iteration of the paper (MacKay's
updates), working in the singular-value basis of F so each iteration costs O(n + D):

    gamma = sum_i beta s_i / (alpha + beta s_i)          (s_i: eigenvalues of F^T F)
    m     = beta (alpha I + beta F^T F)^-1 F^T y
    alpha = gamma / |m|^2,    beta = (n - gamma) / |F m - y|^2

and reports the maximised log evidence divided by n, averaged over the classes. Higher is
better; values are comparable across layers and models on the same probe set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["logme", "fit_class", "log_evidence", "Fit"]

_RELATIVE_RANK = 1e-10  # singular values below this share of the largest count as zero


@dataclass(frozen=True)
class Fit:
    """The evidence maximum for one class: the precisions and log evidence / n."""

    alpha: float  # prior precision of the weights
    beta: float  # precision of the noise
    evidence: float  # log p(y | F, alpha, beta) / n at the maximum
    iterations: int


def logme(features, labels, *, max_iterations: int = 100, tol: float = 1e-6) -> float:
    """LogME of features [n, D] for integer labels [n]: the mean over the classes present of
    the maximised log evidence per sample."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = np.asarray(labels).reshape(-1)
    if len(f) != len(y):
        raise ValueError(f"logme: {len(f)} feature rows but {len(y)} labels")
    if len(y) < 2:
        raise ValueError("logme needs at least 2 samples")
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > _RELATIVE_RANK * max(float(s[0]) if len(s) else 0.0, 1e-300)
    u, sigma = u[:, keep], s[keep] ** 2
    scores = [fit_class(u, sigma, (y == c).astype(np.float64), max_iterations, tol).evidence
              for c in np.unique(y)]
    return float(np.mean(scores))


def fit_class(u: np.ndarray, sigma: np.ndarray, target: np.ndarray, max_iterations: int = 500,
              tol: float = 1e-8) -> Fit:
    """Maximise the evidence of one target column, given F's left singular vectors `u`
    [n, r] and the nonzero eigenvalues `sigma` [r] of F^T F.

    The maximum can lie on the boundary, where the iteration only creeps towards it:
    alpha -> infinity when the features explain nothing of the target (weights pinned to
    zero), and beta -> infinity when they span every probe (r = n, few probes in many
    dimensions: the target is fitted exactly). Both limits have closed forms, so the result
    is the best of the fixed point and the limits that exist."""
    n = len(target)
    z = u.T @ target  # the target in F's column basis
    y2 = float(target @ target)
    outside = max(y2 - float(z @ z), 0.0)  # the part no weights can reach
    limits = [_alpha_limit(n, y2)] + ([_beta_limit(n, sigma, z)] if len(sigma) == n else [])
    if len(sigma) == 0:  # all-zero features: only the noise model is left
        return limits[0]
    alpha, beta, it = 1.0, 1.0, 0
    for it in range(1, max_iterations + 1):
        shrink = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / shrink))  # effective number of fitted directions
        m2 = float(np.sum((beta * np.sqrt(sigma) * z / shrink) ** 2))  # |m|^2
        res2 = float(np.sum((alpha * z / shrink) ** 2)) + outside  # |F m - y|^2
        if n - gamma <= 1e-12 * n or res2 <= 0 or m2 <= 0:
            return max(limits, key=lambda f: f.evidence)  # at a boundary: the limits hold the answer
        new_alpha, new_beta = gamma / m2, (n - gamma) / res2
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    fit = Fit(alpha, beta, _evidence(n, alpha, beta, sigma, z, outside) / n, it)
    return max([fit] + limits, key=lambda f: f.evidence)


def _alpha_limit(n: int, y2: float) -> Fit:
    """alpha -> infinity: the weights are zero and y ~ N(0, I / beta), beta = n / |y|^2."""
    beta = n / max(y2, 1e-300)
    return Fit(math.inf, beta, (0.5 * n * math.log(beta) - 0.5 * n * math.log(2 * math.pi) - 0.5 * beta * y2) / n, 0)


def _beta_limit(n: int, sigma: np.ndarray, z: np.ndarray) -> Fit:
    """beta -> infinity with r = n: y ~ N(0, F F^T / alpha), whose best alpha is
    n / (y^T (F F^T)^-1 y)."""
    q = float(np.sum(z ** 2 / sigma))  # y^T (F F^T)^-1 y
    alpha = n / max(q, 1e-300)
    value = -0.5 * n * math.log(2 * math.pi) - 0.5 * float(np.sum(np.log(sigma))) + 0.5 * n * math.log(alpha) \
        - 0.5 * alpha * q
    return Fit(alpha, math.inf, value / n, 0)


def _evidence(n: int, alpha: float, beta: float, sigma: np.ndarray, z: np.ndarray, outside: float) -> float:
    """log p(y | F, alpha, beta) in the singular-value basis (eq. 2 of the paper).

    The D/2 log(alpha) of the prior and the log-determinant of A = alpha I + beta F^T F share
    D - r factors of alpha (directions F never spans), which cancel; only r remain."""
    shrink = alpha + beta * sigma
    m2 = float(np.sum((beta * np.sqrt(sigma) * z / shrink) ** 2))
    res2 = float(np.sum((alpha * z / shrink) ** 2)) + outside
    log_det = float(np.sum(np.log(shrink)))  # over the r spanned directions
    r = len(sigma)
    return (0.5 * n * math.log(beta) + 0.5 * r * math.log(alpha) - 0.5 * n * math.log(2 * math.pi)
            - 0.5 * beta * res2 - 0.5 * alpha * m2 - 0.5 * log_det)


def log_evidence(features, target, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) / n by the direct route (y ~ N(0, I/beta + F F^T/alpha)), for
    checking: O(n^3), so only for small n."""
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = np.asarray(target, dtype=np.float64)
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    sign, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (n * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y))) / n
