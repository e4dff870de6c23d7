"""Saving and resuming a run: the checkpoint directory plus `train_state.safetensors` (every
optimizer's tensors, the procedure's tensors, the RNG state at an interruption) and a `train`
entry in meta.json (stage, epoch, step, history, the optimizers' scalar state, the procedure's
JSON state). No pickle anywhere."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ..checkpoint import load_weights, read_meta, save, verify
from ..errors import CheckpointError, Diagnostic
from .. import ir
from ..printer import format_spec
from ..resolve import expand

STATE = "train_state.safetensors"
UNSTORED = ("device",)  # settings a run may change on resume: where it runs is not what it computes


def run_key(spec, settings: dict, networks) -> str:
    """What must agree for a resume: the spec's definitions and networks (the train sections
    aside: another section's settings do not change this one) and this section's settings."""
    body = tuple(i for i in expand(spec).items if not isinstance(i, ir.Train))
    text = format_spec(spec.model_copy(update={"comments": (), "items": body}))
    kept = {k: v for k, v in settings.items() if k not in UNSTORED}
    blob = json.dumps({"spec": text, "settings": kept, "networks": list(networks)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# -- flattening: JSON values and tensors apart ----------------------------------------------------


def split_tensors(value: Any, prefix: str, blobs: dict[str, torch.Tensor]) -> Any:
    """`value` with every tensor replaced by {"tensor": KEY}, the tensors put in `blobs`."""
    if torch.is_tensor(value):
        blobs[prefix] = value.detach().contiguous().cpu()
        return {"tensor": prefix}
    if isinstance(value, dict):
        return {str(k): split_tensors(v, f"{prefix}.{k}", blobs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [split_tensors(v, f"{prefix}.{i}", blobs) for i, v in enumerate(value)]
    return value


def join_tensors(value: Any, blobs: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"tensor"} and isinstance(value["tensor"], str):
            return blobs[value["tensor"]]
        return {k: join_tensors(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [join_tensors(v, blobs) for v in value]
    return value


def _optimizer_state(opt: torch.optim.Optimizer, name: str, blobs: dict) -> dict:
    sd = opt.state_dict()
    state = {str(i): split_tensors(st, f"opt.{name}.{i}", blobs) for i, st in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, saved: dict, blobs: dict) -> None:
    state = {int(i): join_tensors(st, blobs) for i, st in saved["state"].items()}
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


# -- saving and loading ----------------------------------------------------------------------------


def save_state(trainer, complete: bool, asm=None, extra_metrics: dict | None = None) -> None:
    """Write the trainer's checkpoint: the Assembly (the stage's, or `asm`), weights, and
    everything a resume needs."""
    st = trainer.state
    blobs: dict[str, torch.Tensor] = {}
    optimizers = {} if complete or trainer.optimizers is None else {
        n: _optimizer_state(o, n, blobs) for n, o in trainer.optimizers.torch.items()}
    procedure = {} if complete else split_tensors(trainer.procedure.state_dict(), "procedure", blobs)
    if st.rng is not None:
        for k, t in st.rng.items():
            blobs[f"rng.{k}"] = t
    train = {"stage": st.stage, "epoch": st.epoch, "step": st.step, "complete": complete, "history": st.history,
             "partial": st.partial if st.step else {}, "optimizers": optimizers, "procedure": procedure,
             "run": trainer.run_key, "networks": list(trainer.section.networks),
             "stages": [s.name for s in trainer.stages]}
    last = next((m for m in reversed(st.history) if "epoch" in m and m.get("stage") != "final"), {})
    metrics = {k: v for k, v in last.items() if k != "epoch"}
    metrics.update(extra_metrics or {})
    save(asm or trainer.ctx.asm, trainer.out, settings=trainer.settings, metrics=metrics, metrics_lines=st.history,
         extra={"train": train, "base_dir": str(trainer.base_dir.resolve())},
         files={STATE: save_bytes(blobs or {"empty": torch.zeros(0)})})


def read_state(trainer, path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The `train` entry of a checkpoint and its tensors, verified against this run."""
    meta = read_meta(path)
    verify(path, meta)
    train = meta.get("train")
    if not train:
        raise CheckpointError(Diagnostic(f"{path} holds no training state to resume", str(path),
                                         hint="train without --resume"))
    if train.get("run") != trainer.run_key:
        raise CheckpointError(Diagnostic(
            f"{path} was written by a run with another spec or other settings; it cannot be resumed", str(path),
            hint="train without --resume to start over, or use the same spec and --set values"))
    try:
        blobs = load_bytes((path / STATE).read_bytes())
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(Diagnostic(f"cannot read {STATE}: {e}", str(path / STATE))) from None
    return train, blobs


def restore_procedure(trainer, train: dict, blobs: dict) -> None:
    """Give the procedure its saved state and the trainer its progress (before the stage's
    Assembly is built)."""
    trainer.procedure.load_state_dict(join_tensors(train.get("procedure") or {}, blobs))
    st = trainer.state
    st.stage, st.epoch, st.step = train.get("stage", 0), train["epoch"], train["step"]
    st.history = list(train["history"])
    st.partial = train.get("partial") or {}
    rng = {k[len("rng."):]: t for k, t in blobs.items() if k.startswith("rng.")}
    st.rng = rng if st.step and rng else None


def restore_stage(trainer, path, train: dict, blobs: dict) -> None:
    """Load the weights and optimizer states of the stage in progress."""
    load_weights(trainer.ctx.asm, path)
    for name, opt in trainer.optimizers.torch.items():
        if name in train.get("optimizers", {}):
            _load_optimizer(opt, train["optimizers"][name], blobs)
