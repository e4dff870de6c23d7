"""Progress: a bar on a terminal (tqdm), one plain line per epoch otherwise."""

from __future__ import annotations

import sys


class _NoBar:
    def update(self, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, epoch: int, epochs: int, steps: int, initial: int):
        from tqdm import tqdm
        self.bar = tqdm(total=steps, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                        file=sys.stderr, dynamic_ncols=True)

    def update(self, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()

    def epoch(self, epoch: int, epochs: int, steps: int, initial: int = 0):
        return _Bar(epoch, epochs, steps, initial) if self.tty else _NoBar()

    def line(self, m: dict) -> None:
        if not self.enabled:
            return
        parts = [f"epoch {m['epoch']}", f"loss {m['loss']:.4f}"]
        for key, v in m.items():
            if key not in ("epoch", "loss", "lr", "seconds", "test_loss") and isinstance(v, float):
                parts.append(f"{key} {v:.4f}")
        parts.append(f"{m['seconds']:.1f}s")
        print("  ".join(parts), file=self.stream, flush=True)
