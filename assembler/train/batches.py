"""The data of a section and the batches of an epoch.

Each trained network has its own data source, matched by position in `data = [...]` (one
source serves them all when the section gives one), and its own test data (`test = ...`, or by
default the test split of its data source). An epoch's sample order is a pure function of
(seed, stage, epoch)."""

from __future__ import annotations

import math

import torch

from .. import data as data_mod
from ..errors import Diagnostic, SpecError, place


def _calls(value, count: int) -> list:
    """One data call per network: the list as given, or one call shared by all."""
    return list(value) if isinstance(value, list) else [value] * count


def load_sources(section, settings: dict, asm, base_dir) -> tuple[list, list]:
    """(train data, test data): one Dataset per trained network (test entries may be None)."""
    nets = section.networks
    if "data" not in settings:
        raise SpecError(Diagnostic(f"train section for {', '.join(nets)} has no 'data'",
                                   *place(section.span), hint='add e.g. data = digits(split="train")'))
    span, tspan = section.spans.get("data"), section.spans.get("test")
    shapes = [_input_shape(asm, n) for n in nets]
    loaded: dict[int, object] = {}

    def load(call, at, shape):  # one Dataset per distinct call (a shared source loads once)
        key = id(call)
        if key not in loaded:
            loaded[key] = data_mod.load(call, base_dir, at, seed=settings["seed"], shape=shape)
        return loaded[key]

    train = [load(c, span, s) for c, s in zip(_calls(settings["data"], len(nets)), shapes)]
    if "test" in settings:
        test = [load(c, tspan, s) for c, s in zip(_calls(settings["test"], len(nets)), shapes)]
    else:
        test = [load(t, span, s) if (t := data_mod.test_split(c)) else None
                for c, s in zip(_calls(settings["data"], len(nets)), shapes)]
    for name, ds, tds in zip(nets, train, test):
        _fits(asm, name, ds, span)
        if tds is not None:
            _fits(asm, name, tds, tspan or span)
    return train, test


def _input_shape(asm, name: str):
    net = asm.checked.networks[name]
    return next(iter(net.inputs.values()), None)


def _fits(asm, name: str, ds, span) -> None:
    net = asm.checked.networks[name]
    (input_name, shape), = list(net.inputs.items())[:1] or [(None, None)]
    outputs = net.node(net.outputs[0]).shape if net.outputs else None
    data_mod.fits(ds, shape, span, input_name=input_name,
                  outputs=outputs[0] if outputs and len(outputs) == 1 else None)


def epoch_seed(seed: int, epoch: int, stage: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + stage * 104_723 + 1) % (2 ** 63)


def batches(data: list, batch: int, seed: int, epoch: int, stage: int = 0, rank: int = 0, world: int = 1) -> list:
    """The batches of an epoch: per data source a permutation seeded by (seed, stage, epoch),
    this rank's shard of it; several sources are zipped, shorter ones cycled. A batch of one
    sample is dropped (batch-norm cannot train on it)."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch, stage))
    orders = []
    for ds in data:
        perm = torch.randperm(len(ds), generator=g)
        if world > 1:
            per = math.ceil(len(perm) / world)
            perm = torch.cat([perm, perm[: per * world - len(perm)]])[rank::world]
        orders.append(perm)
    steps = max(math.ceil(len(o) / batch) for o in orders)
    out = []
    for k in range(steps):
        one = []
        for ds, order in zip(data, orders):
            if len(order) < (k + 1) * batch and len(data) > 1:
                idx = order[torch.arange(k * batch, (k + 1) * batch) % len(order)]
            else:
                idx = order[k * batch:(k + 1) * batch]
            one.append((ds.x[idx], ds.y[idx]))
        if min(len(b[1]) for b in one) < 2:
            continue
        out.append(one)
    return out


def to_device(batch: list, device: torch.device) -> list:
    if device.type == "cpu":
        return batch
    move = lambda v: tuple(t.to(device, non_blocking=True) for t in v) if isinstance(v, tuple) else \
        v.to(device, non_blocking=True)  # noqa: E731
    return [(move(x), y.to(device, non_blocking=True)) for x, y in batch]
