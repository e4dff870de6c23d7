"""LEEP (Nguyen et al., ICML 2020): the log expected empirical prediction of a source model's
own classifier on the target labels, as a transferability score.

With theta(x) the source's softmax over its Z classes and n labelled probes (x_i, y_i):

    P(y, z) = 1/n sum_{i: y_i = y} theta(x_i)_z        (empirical joint of target and source label)
    P(y | z) = P(y, z) / sum_y' P(y', z)
    LEEP    = 1/n sum_i log( sum_z P(y_i | z) theta(x_i)_z )

It is the average log-likelihood of the "expected empirical predictor", a classifier that
maps source labels to target labels without any training. It is at most 0; higher is better.
"""

from __future__ import annotations

import numpy as np

__all__ = ["leep"]


def leep(probabilities, labels) -> float:
    """LEEP of the source's class probabilities [n, Z] (rows summing to 1) for target labels [n]."""
    theta = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if theta.ndim != 2 or len(theta) != len(y):
        raise ValueError(f"leep: probabilities must be [n, Z] for {len(y)} labels, got shape {list(theta.shape)}")
    classes, index = np.unique(y, return_inverse=True)
    onehot = np.zeros((len(y), len(classes)))
    onehot[np.arange(len(y)), index] = 1.0
    joint = onehot.T @ theta / len(y)  # [C, Z]
    marginal = joint.sum(axis=0)  # P(z)
    # A source class no probe is ever given weight under predicts nothing: its column stays 0.
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.sum(conditional[index] * theta, axis=1)  # sum_z P(y_i | z) theta(x_i)_z
    return float(np.mean(np.log(np.maximum(expected, 1e-300))))
