"""Front-end and compile speed on generated specs of N bindings.

Goal (issue 2): `check` of 10,000 bindings in under 2 s, and 10x the bindings costs at most
12x the time. Runs are interleaved (1k, 10k, 1k, 10k, ...) so that load on a shared machine
hits both sizes alike; medians are reported.

    python benchmarks/bench_check.py [--repeats 5] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import assembler


def generate(n: int) -> str:
    """A spec of `n` bindings: several networks of conv/relu chains with merges and gates."""
    per_net = 500
    lines = ["block unit(c) = conv(c, 3, pad=1) -> batchnorm -> relu", ""]
    made = 0
    k = 0
    while made < n:
        count = min(per_net, n - made)
        lines.append(f"network n{k}(x: [4, 8, 8]) {{")
        prev = "x"
        for i in range(count):
            name = f"b{i}"
            if i % 10 == 9:
                lines.append(f"    {name} = gate({prev}, {prev} -> conv(4, 1), init=[2, -2])")
            elif i % 5 == 4:
                lines.append(f"    {name} = add({prev}, {prev} -> unit(4))")
            else:
                lines.append(f"    {name} = {prev} -> conv(4, 3, pad=1) -> relu")
            prev = name
        lines.append(f"    return {prev}")
        lines.append("}")
        lines.append("")
        made += count
        k += 1
    return "\n".join(lines)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time compiling to GraphModules")
    args = ap.parse_args()
    texts = {n: generate(n) for n in (1000, 10000)}
    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for n, text in texts.items():
            runs.setdefault(("parse", n), []).append(timed(lambda: assembler.parse(text, "gen.net")))
            spec = assembler.parse(text, "gen.net")
            runs.setdefault(("check", n), []).append(timed(lambda: assembler.check(spec)))
            runs.setdefault(("parse+check", n), []).append(
                timed(lambda: assembler.check(assembler.parse(text, "gen.net"))))
            if args.compile:
                runs.setdefault(("compile", n), []).append(
                    timed(lambda: [asm[k] for asm in [assembler.compile(spec)] for k in asm]))
    print(f"{'stage':<12} {'1k (s)':>8} {'10k (s)':>8} {'ratio':>6}")
    ok = True
    for stage in dict.fromkeys(s for s, _ in runs):
        a, b = statistics.median(runs[(stage, 1000)]), statistics.median(runs[(stage, 10000)])
        print(f"{stage:<12} {a:8.3f} {b:8.3f} {b / a:6.2f}")
        if stage == "parse+check":
            ok = b < 2.0 and b / a <= 12
    print("goal (10k parse+check < 2 s, ratio <= 12):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
