"""Ctrl-C during training: SIGINT finishes the current step; the trainer then saves and stops
(exit 130). A second Ctrl-C stops at once. Tests interrupt exact steps with injected faults
(`assembler.faults`: `ASSEMBLER_FAULT=sigint@STAGE:EPOCH:STEP`)."""

from __future__ import annotations

import signal
import sys

from .. import faults


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


def inject(stage: int, epoch: int, step: int) -> None:
    """Raise the fault planned for this training step, if any (see `assembler.faults`)."""
    faults.point(f"{stage}:{epoch}:{step}")
