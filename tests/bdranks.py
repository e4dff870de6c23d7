"""A test plug-in (imported through ASSEMBLER_PLUGINS by test_backdistill.py's torchrun test):
back-distillation that reports, in its final metrics, whether every rank ends with the same
adapter weights (they drift apart unless the gradients are averaged over ranks)."""

from __future__ import annotations

import torch
import torch.distributed as td

from assembler.settings import Plugin, plugins, register
from assembler.train.backdistill import BackDistill
from assembler.train.procedure import Outcome


class RanksBackDistill(BackDistill):
    name = "backdistill_ranks"

    def finish(self):
        w = torch.cat([p.detach().flatten() for p in self.parameters()])
        gathered = [torch.empty_like(w) for _ in range(td.get_world_size())]
        td.all_gather(gathered, w)
        return Outcome(self.ctx.asm, {"ranks_agree": all(torch.equal(g, gathered[0]) for g in gathered),
                                      "ranks": len(gathered)})


_base = plugins("procedure")["backdistill"]
register(Plugin("procedure", "backdistill_ranks", _base.params, implementation=RanksBackDistill,
                labels=_base.labels, validate=_base.validate))
