"""Where training runs: `--device auto|cpu|cuda|cuda:N` or `device = "..."` in a train
section. `auto` takes a GPU when one is present. Under torchrun each rank takes its local GPU
(`LOCAL_RANK`). Checkpoints stay device-independent: tensors are saved from the CPU and load
onto whatever device the run uses."""

from __future__ import annotations

import os
import re

import torch

from ..errors import Diagnostic, SpecError

_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve(text: str | None, where: str = "--device") -> torch.device:
    """The torch device a setting names; a SpecError naming `where` when it cannot be used."""
    text = (text or "auto").strip()
    if not _PATTERN.fullmatch(text):
        raise SpecError(Diagnostic(f"{where}: unknown device '{text}'", where,
                                   hint='use auto, cpu, cuda or cuda:N'))
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpecError(Diagnostic(f"{where}: '{text}' asked for, but torch sees no CUDA device", where,
                                   hint="use --device cpu (or auto), or install a CUDA build of torch"))
    index = int(text.split(":")[1]) if ":" in text else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise SpecError(Diagnostic(f"{where}: '{text}' asked for, but there are {torch.cuda.device_count()} "
                                   "CUDA device(s)", where, hint="cuda:0 is the first"))
    return torch.device("cuda", index)
