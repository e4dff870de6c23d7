"""Saving and resuming a run: the checkpoint directory plus `train_state.safetensors`
(optimizer tensors, the RNG state at an interruption) and a `train` entry in meta.json
(epoch, step, history, the optimizer's scalar state). No pickle anywhere."""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ..checkpoint import _load_owned, read_meta, save, verify
from ..errors import CheckpointError, Diagnostic
from ..printer import format_spec
from ..resolve import expand

STATE = "train_state.safetensors"


def run_key(trainer) -> str:
    """What must agree for a resume: the networks' spec and the section's settings."""
    spec = expand(trainer.asm.spec).model_copy(update={"comments": ()})
    blob = json.dumps({"spec": format_spec(spec), "settings": trainer.settings,
                       "networks": list(trainer.section.networks)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_state(trainer, complete: bool) -> None:
    opt = trainer.optimizer.state_dict()
    blobs: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                blobs[f"opt.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    if trainer.state.rng is not None:
        blobs["rng"] = trainer.state.rng
    st = trainer.state
    train = {"epoch": st.epoch, "step": st.step, "complete": complete, "history": st.history,
             "partial": st.partial if st.step else {}, "opt_scalars": scalars,
             "param_groups": [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
                              for g in opt["param_groups"]],
             "run": run_key(trainer), "networks": list(trainer.section.networks)}
    last = st.history[-1] if st.history else {}
    metrics = {k: v for k, v in last.items() if k != "epoch"}
    metrics.update(getattr(trainer.procedure, "final_metrics", {}) or {})
    save(trainer.asm, trainer.out, settings=trainer.settings, metrics=metrics, metrics_lines=st.history,
         extra={"train": train, "base_dir": str(trainer.base_dir.resolve())}, files={STATE: save_bytes(blobs or {"empty": torch.zeros(0)})})


def load_state(trainer, path) -> None:
    """Restore weights, optimizer, RNG and progress from a checkpoint written by `save_state`."""
    meta = read_meta(path)
    verify(path, meta)
    train = meta.get("train")
    if not train:
        raise CheckpointError(Diagnostic(f"{path} holds no training state to resume", str(path),
                                         hint="train without --resume"))
    if train.get("run") != run_key(trainer):
        raise CheckpointError(Diagnostic(
            f"{path} was written by a run with another spec or other settings; it cannot be resumed", str(path),
            hint="train without --resume to start over, or use the same spec and --set values"))
    _load_owned(trainer.asm, path, trainer.asm.checked)
    try:
        blobs = load_bytes((path / STATE).read_bytes())
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(Diagnostic(f"cannot read {STATE}: {e}", str(path / STATE))) from None
    state = {}
    for key, t in blobs.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = t
    for idx, sc in train["opt_scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    trainer.optimizer.load_state_dict({"state": state, "param_groups": train["param_groups"]})
    st = trainer.state
    st.epoch, st.step, st.history = train["epoch"], train["step"], list(train["history"])
    st.partial = train.get("partial") or {}
    st.rng = blobs.get("rng") if st.step else None
