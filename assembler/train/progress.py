"""Progress: a bar on a terminal (tqdm), one plain line per epoch otherwise, each naming the
network(s) and stage being trained."""

from __future__ import annotations

import sys


class _NoBar:
    def update(self, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, desc: str, steps: int, initial: int):
        from tqdm import tqdm
        self.bar = tqdm(total=steps, initial=initial, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


HIDDEN = ("epoch", "stage", "loss", "seconds", "networks")


class Progress:
    def __init__(self, enabled: bool = True, stream=None, label: str = ""):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.label = label
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()

    def _prefix(self, stage: str | None) -> str:
        where = f" [{stage}]" if stage and stage != "train" else ""
        return f"{self.label}{where}: " if self.label else where.strip()

    def epoch(self, stage: str, epoch: int, epochs: int, steps: int, initial: int = 0):
        if not self.tty:
            return _NoBar()
        return _Bar(f"{self._prefix(stage)}epoch {epoch + 1}/{epochs}", steps, initial)

    def line(self, m: dict) -> None:
        if not self.enabled:
            return
        parts = [f"{self._prefix(m.get('stage'))}epoch {m['epoch']}", f"loss {m['loss']:.4f}"]
        values = {k: v for k, v in m.items() if k not in HIDDEN and not k.startswith("lr")}
        for net, row in (m.get("networks") or {}).items():
            values.update({f"{net}.{k}": v for k, v in row.items()})
        for key, v in values.items():
            if isinstance(v, float) and not key.endswith("test_loss"):
                parts.append(f"{key} {v:.4f}")
        parts.append(f"{m['seconds']:.1f}s")
        print("  ".join(parts), file=self.stream, flush=True)
