"""`distill`: the task loss plus temperature-scaled knowledge distillation on the outputs of a
teacher network (Hinton et al.; the KD baseline of the transplanting paper, 000)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .procedure import Batch, Procedure, Step, first_output
from .teacher import teacher_network


class Distill(Procedure):
    name = "distill"

    def setup(self) -> None:
        self.teacher = teacher_network(self.ctx, self.ctx.args["teacher"])

    def loss(self, batch: Batch) -> Step:
        x, y = batch[0]
        student = self.networks()[0]
        logits = first_output(self.ctx.model(student)(x))
        with torch.no_grad():
            target = first_output(self.teacher(x))
        if target.shape != logits.shape:
            raise ValueError(f"the teacher gives outputs {list(target.shape[1:])} but the student "
                             f"{list(logits.shape[1:])}; distill needs the same classes")
        t, a = self.ctx.args["temperature"], self.ctx.args["alpha"]
        ce = F.cross_entropy(logits, y)
        kd = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(target / t, 1), log_target=True,
                      reduction="batchmean") * (t * t)
        loss = (1 - a) * ce + a * kd
        return Step(loss, {"ce": ce.item(), "kd": kd.item()}, {student: logits})
