"""Injected faults for tests of what survives a crash or an interruption.

`ASSEMBLER_FAULT` names faults at exact points, separated by commas:
  sigint@STAGE:EPOCH:STEP   a real SIGINT to this process before that training step (0-based)
  exit@STAGE:EPOCH:STEP     the process ends there at once, exit code 137, as kill -9 leaves it
  exit@NAME                 the same at a named point of the code (`swap`: between the renames
                            that replace a checkpoint; `swapped`: after the new one is in place,
                            before the old one is removed)
Without the variable every call here does nothing."""

from __future__ import annotations

import os
import signal


def _faults() -> list[tuple[str, str]]:
    spec = os.environ.get("ASSEMBLER_FAULT", "")
    return [tuple(f.strip().split("@", 1)) for f in spec.split(",") if "@" in f]


def point(name: str) -> None:
    """Raise the fault planned for a named point (or a STAGE:EPOCH:STEP position), if any."""
    for kind, at in _faults():
        if at == name:
            if kind == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            elif kind == "exit":
                os._exit(137)
