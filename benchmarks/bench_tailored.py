"""Speed of `make demo`'s tailored network against its teacher: both inference-compiled
(`assembler.inference.compile`), CPU, interleaved rounds, median of per-round time ratios
(below 1: the tailored network is faster), at batch 1 and 256. The training graphs (eval
mode) are timed too, for comparison.

The network is the demo's: specs/digits/tailor.net tailored as `python -m assembler.demo`
does (the example's own settings); an existing checkpoint is reused (--checkpoint), else it
is trained (about a minute).

    python benchmarks/bench_tailored.py [--checkpoint runs/demo/tailored] [--rounds 200] [--threads 1]
                                        [--adaptive-malloc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from assembler import inference, load
from assembler.allocator import steady_allocator
from assembler.checkpoint import restore
from assembler.train.run import train_spec

ROOT = Path(__file__).resolve().parent.parent


def tailored(path: Path, spec: str = "tailor.net", sets: tuple[str, ...] = ()):
    """The checkpoint at `path` of specs/digits/`spec`'s student tailored with `sets` (the demo's
    network by default), trained there first when missing."""
    if not (path / "meta.json").is_file():
        print(f"training {spec}'s tailored network into {path}", file=sys.stderr)
        train_spec(load(ROOT / "specs" / "digits" / spec), network="student", out=path, quiet=True, force=True,
                   sets=list(sets))
    return restore(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/demo/tailored"))
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--adaptive-malloc", action="store_true",
                    help="keep glibc's adaptive mmap/trim thresholds (default: fixed, assembler.allocator.steady_allocator)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steady = False if args.adaptive_malloc else steady_allocator()
    asm = tailored(args.checkpoint)
    final = asm.meta.get("metrics", {})
    nets = {"tailored": inference.compile(asm, "student"), "teacher": inference.compile(asm, "teacher"),
            "tailored, training graph": asm["student"].eval(), "teacher, training graph": asm["teacher"].eval()}
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} interleaved rounds, glibc malloc "
          f"thresholds {'fixed' if steady else 'adaptive'}; the tailored "
          f"network keeps k={final.get('chosen_k')}: {asm.checked.flops('student'):,} FLOPs against the teacher's "
          f"{asm.checked.flops('teacher'):,} ({asm.checked.flops('student') / asm.checked.flops('teacher'):.1%})")
    print("| batch | teacher (inference) | tailored / teacher, inference-compiled | tailored / teacher, training graphs |")
    print("| ---: | ---: | ---: | ---: |")
    for batch in (1, 256):
        x = inference.example_inputs(asm.checked.networks["student"].inputs, batch=batch)
        times = inference.interleaved_latency(nets, x, rounds=args.rounds, number=20 if batch == 1 else 1)
        print(f"| {batch} | {statistics.median(times['teacher']) * 1e3:.3f} ms | "
              f"{inference.median_ratio(times, 'tailored', 'teacher'):.3f} | "
              f"{inference.median_ratio(times, 'tailored, training graph', 'teacher, training graph'):.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
