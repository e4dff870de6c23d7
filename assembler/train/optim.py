"""Optimizers and learning-rate schedules. The trainer builds every optimizer a procedure
declares (`Procedure.optimizers`) from a checked setting value and applies its schedule, a
pure function of the epoch, at the start of every epoch."""

from __future__ import annotations

import math

import torch

from ..settings import plugins


def schedule_factor(schedule: dict, epoch: int, epochs: int) -> float:
    """The learning-rate multiplier of an epoch (0-based): a pure function."""
    name, args = schedule["name"], schedule.get("args", {})
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
    if name == "step":
        return args.get("gamma", 0.1) ** (epoch // args["every"])
    return 1.0


def make_optimizer(spec: dict, groups: list[dict]) -> torch.optim.Optimizer:
    """A torch optimizer from a checked setting value such as {"name": "sgd", "args": {...}}."""
    name, a = spec["name"], spec["args"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=a["lr"], momentum=a["momentum"], weight_decay=a["weight_decay"],
                               nesterov=a["nesterov"] and a["momentum"] > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=a["lr"], weight_decay=a["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=a["lr"], weight_decay=a["weight_decay"])
    factory = plugins("optimizer")[name].resolve()
    return factory(groups, **a)


class Optimizers:
    """The named optimizers of one stage, each with its schedule."""

    def __init__(self, declared: dict, settings: dict, epochs: int):
        self.epochs = epochs
        self.torch: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, dict] = {}
        for name, decl in declared.items():
            groups = [g for g in decl.groups if g["params"]]
            if not groups:
                continue
            opt = make_optimizer(decl.optimizer or settings["optimizer"], groups)
            for g in opt.param_groups:
                g["initial_lr"] = g["lr"]
            self.torch[name] = opt
            self.schedules[name] = decl.schedule or settings["schedule"]

    def __bool__(self) -> bool:
        return bool(self.torch)

    def start_epoch(self, epoch: int) -> None:
        for name, opt in self.torch.items():
            factor = schedule_factor(self.schedules[name], epoch, self.epochs)
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * factor

    def lrs(self) -> dict[str, float]:
        """The learning rate of each optimizer's first group, for the metrics: `lr` for
        "model" (or a lone optimizer), `lr.NAME` for the others."""
        if len(self.torch) == 1:
            return {"lr": next(iter(self.torch.values())).param_groups[0]["lr"]}
        return {("lr" if n == "model" else f"lr.{n}"): o.param_groups[0]["lr"] for n, o in self.torch.items()}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for opt in self.torch.values() for g in opt.param_groups for p in g["params"]]
