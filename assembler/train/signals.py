"""Ctrl-C during training, and injected faults for tests.

SIGINT finishes the current step; the trainer then saves and stops (exit 130). A second
Ctrl-C stops at once.

`ASSEMBLER_FAULT` injects a fault at an exact point of a run, so tests can interrupt every
stage deterministically: `sigint@STAGE:EPOCH:STEP` sends this process a real SIGINT before
that step (stage and epoch 0-based, step 0-based within the epoch), `exit@STAGE:EPOCH:STEP`
ends it with exit code 137 as a kill -9 would (no clean-up). Several faults are separated by
commas. Other modules read named points with `fault_point(name)` (e.g. a crash between the
renames of a checkpoint swap)."""

from __future__ import annotations

import os
import signal
import sys


class StopRequest:
    """Catches SIGINT while a trainer runs; `requested` turns true on the first Ctrl-C."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.requested = True
            print("\ninterrupt: finishing the step and saving (Ctrl-C again to abort)", file=sys.stderr)
        try:
            self._old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _faults() -> list[tuple[str, str]]:
    spec = os.environ.get("ASSEMBLER_FAULT", "")
    return [tuple(f.split("@", 1)) for f in spec.split(",") if "@" in f]


def inject(stage: int, epoch: int, step: int) -> None:
    """Raise the fault planned for this point of training, if any."""
    where = f"{stage}:{epoch}:{step}"
    for kind, at in _faults():
        if at == where:
            _fire(kind)


def fault_point(name: str) -> None:
    """Raise the fault planned for a named point (`exit@swap`), if any."""
    for kind, at in _faults():
        if at == name:
            _fire(kind)


def _fire(kind: str) -> None:
    if kind == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif kind == "exit":
        os._exit(137)
