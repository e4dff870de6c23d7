"""`make demo`: check the digits example specs, train the source network on digits 0-4,
then fine-tune a teacher for digits 5-9 from its frozen-then-copied blocks, and print what
each reached. Run from the repository root: `python -m assembler.demo`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import load
from .checkpoint import restore
from .cli import network_summary
from .resolve import check
from .train.run import train_spec
from .train.trainer import evaluate
from . import data

SPECS = Path(__file__).resolve().parent.parent / "specs" / "digits"


def main(out: Path = Path("runs/demo")) -> int:
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and never oversubscribes
    print("== checking the example specs")
    for f in sorted(SPECS.glob("*.net")):
        checked = check(load(f))
        nets = ", ".join(f"{n} ({network_summary(checked, n)['params']:,} params)" for n in checked.networks)
        print(f"  {f.name}: {nets}")
    print("\n== training specs/digits/source.net on digits 0-4")
    train_spec(load(SPECS / "source.net"), out=out / "source")
    source = restore(out / "source" / "cnn")
    acc = evaluate(source["cnn"], data.digits(split="test", classes=[0, 1, 2, 3, 4]))["accuracy"]
    print(f"source cnn: test accuracy {acc:.4f} on digits 0-4  ({out / 'source' / 'cnn'})")
    print("\n== fine-tuning tailor.net's teacher on digits 5-9 (its import source.net is trained first)")
    train_spec(load(SPECS / "tailor.net"), network="teacher", out=out / "teacher")
    teacher = restore(out / "teacher")
    acc = evaluate(teacher["teacher"], data.digits(split="test", classes=[5, 6, 7, 8, 9]))["accuracy"]
    print(f"teacher: test accuracy {acc:.4f} on digits 5-9  ({out / 'teacher'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
