"""Forward+backward time of the compiled source.net network against the same network written
by hand in PyTorch (tests/test_compile.py's HandCNN), interleaved runs, median ratio.
Goal (issue 3): at most 1.05.

    python benchmarks/bench_compiled.py [--repeats 200] [--batch 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from assembler.allocator import steady_allocator
import assembler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_compile import HandCNN, _copy_into  # noqa: E402


def step(model, x, y):
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steady_allocator()  # glibc's adaptive thresholds make batch-256 timings vary (assembler.allocator)
    gm = assembler.compile(assembler.load(ROOT / "specs/digits/source.net"))["cnn"]
    hand = HandCNN()
    _copy_into(hand, gm)
    gm.train()
    hand.train()
    x, y = torch.rand(args.batch, 1, 8, 8), torch.randint(0, 5, (args.batch,))
    for _ in range(20):
        step(gm, x, y)
        step(hand, x, y)
    ratios, tc, th = [], [], []
    for i in range(args.repeats):
        order = (gm, hand) if i % 2 == 0 else (hand, gm)
        times = {}
        for m in order:
            t = time.perf_counter()
            step(m, x, y)
            times[id(m)] = time.perf_counter() - t
        tc.append(times[id(gm)])
        th.append(times[id(hand)])
        ratios.append(times[id(gm)] / times[id(hand)])
    print(f"compiled {statistics.median(tc) * 1e3:.3f} ms, hand-written {statistics.median(th) * 1e3:.3f} ms, "
          f"median ratio {statistics.median(ratios):.3f} over {args.repeats} interleaved pairs "
          f"(batch {args.batch}, {args.threads} thread(s))")
    print("goal (<= 1.05):", "met" if statistics.median(ratios) <= 1.05 else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
