"""NetTailor's last stage (paper 001, section 3.5): prune, fine-tune, and keep the leanest
network within `tolerance` of the teacher's accuracy. The result is an ordinary spec: removed
blocks gone, single-path gates collapsed."""

from __future__ import annotations

import sys

from ..compiler import compile as compile_spec
from ..edits import prune_with_map
from ..errors import SpecError
from ..resolve import expand
from ..testing.checks import share_weights
from .trainer import Trainer, evaluate


def prune_assembly(asm, student: str, threshold: float, k: int, seed: int = 0):
    """Prune a trained Assembly's student: (new Assembly with the surviving weights, removed
    pre-trained blocks, removed items)."""
    from .nettailor import pruning_plan
    net = asm.checked.networks[student]
    items, removed = pruning_plan(net, asm.modules, threshold, k)
    pruned, keymap, kept = prune_with_map(expand(asm.spec), student, items)
    new = compile_spec(pruned, seed=seed)
    share_weights(asm, new, keymap, kept, network=student)
    return new, removed, items


def tailor(proc, trainer) -> dict:
    args = proc.ctx.args
    asm, student = trainer.asm, proc.student
    val = trainer.val_data  # the choice of k uses held-out training data, never the test data
    test = trainer.test_data[0] if trainer.test_data else None
    teacher_acc = evaluate(proc.teacher, val)["accuracy"]
    teacher_test = evaluate(proc.teacher, test)["accuracy"] if test is not None else None
    # The teacher usually trained on the held-out samples too, which inflates its accuracy there;
    # the untailored student never saw them. The reference is the lower of the two.
    student_acc = evaluate(asm.network(student), val)["accuracy"]
    reference = min(teacher_acc, student_acc)
    from .nettailor import gate_paths
    n_blocks = sum(not p.proxy for p in gate_paths(asm.checked.networks[student]))
    ks = args.get("blocks") or list(range(n_blocks + 1))
    retrain = dict(trainer.settings, epochs=args.get("retrain_epochs") or trainer.settings["epochs"])
    section = trainer.section.model_copy(update={"settings": retrain})
    rows, candidates = [], []
    for k in ks:
        try:
            new, removed, items = prune_assembly(asm, student, args["threshold"], k, trainer.settings["seed"])
        except SpecError as e:
            rows.append({"k": k, "error": e.message})
            continue
        from .nettailor import NetTailor
        Trainer(new, section, None, base_dir=trainer.base_dir, quiet=True,
                procedure_factory=lambda ctx: NetTailor(ctx, retraining=True)).run()
        acc = evaluate(new[student], val)["accuracy"]
        row = {"k": k, "removed_blocks": removed, "removed_proxies": len(items) - len(removed),
               "params": new.checked.params(student), "flops": new.checked.flops(student), "accuracy": acc,
               "test_accuracy": evaluate(new[student], test)["accuracy"] if test is not None else None}
        rows.append(row)
        candidates.append((row, new))
    if not candidates:
        raise SpecError.at("nettailor: no pruning left a valid network", trainer.section.span)
    good = [c for c in candidates if c[0]["accuracy"] >= reference - args["tolerance"]]
    chosen = min(good, key=lambda c: (c[0]["flops"], -c[0]["accuracy"])) if good else \
        max(candidates, key=lambda c: c[0]["accuracy"])
    trainer.asm = proc.ctx.asm = chosen[1]
    before = {"params": asm.checked.params(student), "flops": asm.checked.flops(student)}
    summary = {"teacher_accuracy": teacher_test, "teacher_val_accuracy": teacher_acc,
               "student_val_accuracy": student_acc, "reference_accuracy": reference,
               "student_params": before["params"], "student_flops": before["flops"], "tailor": rows,
               "chosen_k": chosen[0]["k"], "val_accuracy": chosen[0]["accuracy"],
               "test_accuracy": chosen[0]["test_accuracy"], "params": chosen[0]["params"],
               "flops": chosen[0]["flops"]}
    proc.final_metrics = summary
    if not trainer.quiet:
        print(table(summary), file=sys.stderr)
    return summary


def table(summary: dict) -> str:
    lines = [f"on held-out training data: teacher {summary['teacher_val_accuracy']:.4f}, untailored student "
             f"{summary['student_val_accuracy']:.4f} ({summary['student_params']:,} params, "
             f"{summary['student_flops']:,} FLOPs); reference {summary['reference_accuracy']:.4f}",
             f"{'k':>3}  {'params':>9}  {'FLOPs':>10}  {'val acc':>8}  {'test acc':>8}  removed blocks"]
    for r in summary["tailor"]:
        if "error" in r:
            lines.append(f"{r['k']:>3}  {r['error']}")
            continue
        mark = "  <- kept" if r["k"] == summary["chosen_k"] else ""
        t = f"{r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else "-"
        lines.append(f"{r['k']:>3}  {r['params']:>9,}  {r['flops']:>10,}  {r['accuracy']:>8.4f}  {t:>8}  "
                     f"{', '.join(r['removed_blocks']) or '-'} (+{r['removed_proxies']} proxies){mark}")
    return "\n".join(lines)
