"""`make demo`: check the digits example specs, train the source network on digits 0-4, then
tailor a network for digits 5-9 with NetTailor (frozen source blocks, gated proxies, pruning),
print the table over k, and draw the tailored network with its learned gate alphas.
Run from the repository root: `python -m assembler.demo`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import load
from .checkpoint import restore
from . import draw
from .allocator import steady_allocator
from .summary import learned_weights, network_summary
from .resolve import check
from .train.evaluation import evaluate
from .train.run import ensure_trained, train_spec
from . import data

SPECS = Path(__file__).resolve().parent.parent / "specs" / "digits"


def main(out: Path = Path("runs/demo")) -> int:
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and never oversubscribes
    steady_allocator()  # stable batch-256 timings (assembler.allocator)
    print("== checking the example specs")
    for f in sorted(SPECS.glob("*.net")):
        checked = check(load(f))
        nets = ", ".join(f"{n} ({network_summary(checked, n)['params']:,} params)" for n in checked.networks)
        print(f"  {f.name}: {nets}")
    print("\n== training specs/digits/source.net on digits 0-4 (once: the specs that import it reuse it)")
    source_dir = ensure_trained(SPECS / "source.net")
    source = restore(source_dir)
    acc = evaluate(source["cnn"], data.digits(split="test", classes=[0, 1, 2, 3, 4]))["accuracy"]
    print(f"source cnn: test accuracy {acc:.4f} on digits 0-4  ({source_dir})")
    print("\n== tailoring specs/digits/tailor.net for digits 5-9: the teacher first, then the student")
    print("   (both sections hold out the same 20% of the training data; k is the leanest whose accuracy")
    print("    there is within the example's tolerance of the teacher's)")
    history = train_spec(load(SPECS / "tailor.net"), network="student", out=out / "tailored", force=True)["student"]
    final = history[-1]
    tailored = restore(out / "tailored")
    acc = evaluate(tailored["student"], data.digits(split="test", classes=[5, 6, 7, 8, 9]))["accuracy"]
    teacher_flops = tailored.checked.flops("teacher")
    print(f"\ntailored student: test accuracy {acc:.4f} (teacher {final['teacher_accuracy']:.4f}), "
          f"{final['params']:,} params, {final['flops']:,} FLOPs = {final['flops'] / teacher_flops:.1%} of the "
          f"teacher's; the tailored spec is {out / 'tailored' / 'spec.net'}")
    print(speed(tailored))
    picture = out / "tailored.svg"
    picture.write_text(draw.to_svg(tailored.checked, ["student"], learned_weights(tailored)), encoding="utf-8")
    print(f"picture of the tailored network, gate alphas as widths: {picture}")
    return 0


def speed(asm, rounds: int = 100) -> str:
    """The tailored student against its teacher, both inference-compiled (CPU, this process's
    threads): medians over interleaved rounds of the time ratio, at batch 1 and 256."""
    from . import inference
    nets = {n: inference.compile(asm, n) for n in ("student", "teacher")}
    parts = []
    for batch in (1, 256):
        x = inference.example_inputs(asm.checked.networks["student"].inputs, batch=batch)
        times = inference.interleaved_latency(nets, x, rounds=rounds, number=20 if batch == 1 else 1)
        parts.append(f"{inference.median_ratio(times, 'student', 'teacher'):.2f} at batch {batch}")
    return "inference-compiled, tailored / teacher time: " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
