"""Adapter-only training (as in transplant.net: frozen category module, trainable adapter,
frozen task module): epoch time with the frozen-prefix cache, without it, and of the trainable
part alone (the adapter and what follows it, fed precomputed features by hand). Interleaved
epochs, medians and ratios. Goal (issue 4): cached within 1.2x of the trainable part alone.

    python benchmarks/bench_prefix_cache.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from assembler.allocator import steady_allocator
import assembler
from assembler import data
from assembler.train.prefix import cached

SPEC = """\
network pre(x: [1, 8, 8]) {
    f = x -> conv(32, 3, pad=1) -> batchnorm -> relu -> conv(64, 3, pad=1) -> batchnorm -> relu
    g = f -> conv(64, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    y = g -> conv(32, 3, pad=1) -> relu -> gap -> linear(10)
    return y
}

network student(x: [1, 8, 8]) {
    f = x -> frozen pre.f..g
    adapter h = f -> conv(64, 3, pad=1) -> relu
    y = h -> frozen pre.y
    return y
}
"""


def epoch(model, xs, ys, opt, batch: int = 64) -> float:
    t = time.perf_counter()
    for i in range(0, len(ys), batch):
        x = xs[i:i + batch] if isinstance(xs, torch.Tensor) else tuple(f[i:i + batch] for f in xs)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), ys[i:i + batch]).backward()
        opt.step()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    steady_allocator()  # glibc's adaptive thresholds make batch-256 timings vary (assembler.allocator)
    asm = assembler.compile(assembler.parse(SPEC))
    ds = data.digits(split="train")
    params = asm.trainable_parameters("student")
    opt = torch.optim.SGD(params, lr=0.01)
    full = asm["student"]
    full.train()
    t = time.perf_counter()
    suffix, (feats,) = cached(asm, "student", [ds.x])
    setup = time.perf_counter() - t
    h = [asm.modules[k] for k in asm.module_of("student", "h")]
    tail = [asm.modules[k] for k in asm.module_of("student", "y")]

    def alone(x):  # the trainable part alone, written by hand
        z = torch.relu(h[0](x[0]))
        z = torch.relu(tail[0](z))
        return tail[1](z.mean((2, 3)))

    runs = {"uncached": [], "cached": [], "alone": []}
    for _ in range(args.repeats):
        runs["uncached"].append(epoch(full, ds.x, ds.y, opt))
        runs["cached"].append(epoch(suffix, feats, ds.y, opt))
        runs["alone"].append(epoch(alone, feats, ds.y, opt))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = statistics.median(c / a for c, a in zip(runs["cached"], runs["alone"]))
    print(f"epoch of {len(ds)} samples: uncached {med['uncached']:.3f} s, cached {med['cached']:.3f} s "
          f"(+{setup:.3f} s once to fill the cache), trainable part alone {med['alone']:.3f} s")
    print(f"cached / alone {ratio:.3f}; uncached / cached {med['uncached'] / med['cached']:.2f}")
    print("goal (cached <= 1.2x alone):", "met" if ratio <= 1.2 else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
