"""Evaluation of a network on a data set, and the stratified held-out split procedures choose
on (never the test data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .procedure import first_output


def split_validation(ds, share: float, seed: int):
    """(train, validation): a seeded, stratified share of each class held out."""
    g = torch.Generator().manual_seed(seed + 104_729)
    keep, held = [], []
    for c in torch.unique(ds.y).tolist():
        idx = torch.nonzero(ds.y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n = max(1, round(len(idx) * share)) if len(idx) > 1 else 0
        held.append(idx[:n])
        keep.append(idx[n:])
    keep, held = torch.cat(keep).sort().values, torch.cat(held).sort().values
    part = lambda i, tag: type(ds)(ds.x[i], ds.y[i], ds.classes, f"{ds.name}[{tag}]", ds.class_names)  # noqa: E731
    return part(keep, "train"), part(held, "validation")


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate(model: nn.Module, ds, batch: int = 256, per_class: bool = False) -> dict:
    """Accuracy and cross-entropy of a model's first output on a dataset (eval mode), per class
    (by the data set's class names) with `per_class`."""
    was = model.training
    model.eval()
    device = _device_of(model)
    correct, loss, n = 0, 0.0, 0
    seen = hit = None  # per class, with `per_class`
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            x, y = ds.x[i:i + batch].to(device), ds.y[i:i + batch].to(device)
            logits = first_output(model(x))
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            correct += int((pred == y).sum())
            n += len(y)
            if per_class:
                k = logits.shape[1]
                s, h = torch.bincount(y.cpu(), minlength=k)[:k], torch.bincount(y[pred == y].cpu(), minlength=k)[:k]
                seen, hit = (s, h) if seen is None else (seen + s, hit + h)
    model.train(was)
    out = {"accuracy": correct / max(1, n), "loss": loss / max(1, n), "samples": n}
    if seen is not None:
        k = len(seen)
        names = ds.class_names if ds.class_names and len(ds.class_names) == k else [str(c) for c in range(k)]
        out["per_class"] = {names[c]: (hit[c] / seen[c]).item() if seen[c] else None for c in range(k)}
    return out
