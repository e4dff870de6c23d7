"""Checking and timing networks: random example inputs, the largest difference between two
networks' outputs, and latency measured in interleaved rounds (ratios against a baseline
timed in the same rounds, so that a shared, noisy machine hits every candidate alike)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn


def example_inputs(inputs: dict[str, tuple[int, ...]], batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs for a network's input shapes (checked IR shapes leave out the batch)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((batch, *shape), generator=g) for shape in inputs.values())


def max_abs_diff(a: Callable, b: Callable, inputs: tuple[torch.Tensor, ...]) -> float:
    """The largest absolute difference between the outputs of `a` and `b` (eval mode, no grad)."""
    oa, ob = outputs(a, inputs), outputs(b, inputs)
    if len(oa) != len(ob):
        raise ValueError(f"the two networks return {len(oa)} and {len(ob)} outputs")
    return max((float((x - y).abs().max()) for x, y in zip(oa, ob) if x.numel()), default=0.0)


def outputs(fn: Callable, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The outputs of `fn` as a flat list, run in eval mode without gradients (a module's mode
    is restored afterwards)."""
    mode = fn.training if isinstance(fn, nn.Module) else None
    try:
        if mode is not None:
            fn.eval()
        with torch.no_grad():
            return _flat(fn(*inputs))
    finally:
        if mode is not None:
            fn.train(mode)


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    return [t for v in out for t in _flat(v)]


def interleaved_latency(candidates: dict[str, Callable], inputs: tuple[torch.Tensor, ...], *,
                        rounds: int = 50, number: int = 1, warmup: int = 5) -> dict[str, list[float]]:
    """Seconds per call of each candidate, measured in interleaved rounds (the order alternates,
    so drifting machine load hits every candidate alike); `number` calls per measurement."""
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                candidates[n](*inputs)
        for r in range(rounds):
            for n in (names if r % 2 == 0 else reversed(names)):
                t = time.perf_counter()
                for _ in range(number):
                    candidates[n](*inputs)
                times[n].append((time.perf_counter() - t) / number)
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of time[numerator] / time[denominator]."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))
