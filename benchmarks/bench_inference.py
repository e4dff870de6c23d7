"""Eval-mode speed of the inference compilation (`assembler.inference.compile`) against the
training graph it comes from, at batch 1 and 256: interleaved runs, median of per-round
ratios (below 1: the inference compilation is faster). With and without channels-last.

    python benchmarks/bench_inference.py [--rounds 40] [--threads 1]

Networks: source.net's cnn (plain), tailor.net's student (gates and proxies, 3 skips per
node) and tailor_resnet.net's student (residual blocks, gates, proxies). Weights are the
compiled initial ones with randomised batch-norm statistics and gate logits: speed does not
depend on their values (no alpha is exactly 0 here).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import torch

from assembler.allocator import steady_allocator
import assembler
from assembler import inference

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = [("source.net", "cnn"), ("tailor.net", "student"), ("tailor_resnet.net", "student")]


def randomise(asm) -> None:
    """Batch-norm statistics and gate logits away from their initial values."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in (mod for top in asm.modules.values() for mod in top.modules()):
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, assembler.modules.Gate):
                m.logits.copy_(torch.randn(m.logits.shape, generator=g))


def measure(spec: str, network: str, rounds: int) -> list[str]:
    os.chdir(ROOT / "specs" / "digits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asm = assembler.compile(assembler.load(spec), seed=0)
    randomise(asm)
    train_graph = asm[network].eval()
    candidates = {"training graph": train_graph,
                  "inference": inference.compile(asm, network, channels_last=False),
                  "inference+channels-last": inference.compile(asm, network, channels_last=True)}
    lines = []
    for batch in (1, 256):
        x = inference.example_inputs(asm.checked.networks[network].inputs, batch=batch)
        times = inference.interleaved_latency(candidates, x, rounds=rounds, number=20 if batch == 1 else 1)
        base = sorted(times["training graph"])[len(times["training graph"]) // 2]
        cells = [f"{spec}:{network}", f"{batch}", f"{base * 1e3:.3f} ms"]
        for name in ("inference", "inference+channels-last"):
            cells.append(f"{inference.median_ratio(times, name, 'training graph'):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steady_allocator()  # glibc's adaptive thresholds make batch-256 timings vary (assembler.allocator)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} interleaved rounds; "
          "ratio = inference time / training-graph time (eval mode), median over rounds")
    print("| network | batch | training graph | inference | inference+channels-last |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for spec, network in NETWORKS:
        for line in measure(spec, network, args.rounds):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
