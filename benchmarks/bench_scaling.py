"""How `check` scales: one dimension of a spec grows 10x at a time while the others stay
small, and the time of parse + check (+ rendering, where the spec has errors) is measured.

Goal (issue 17): every 10x growth of any dimension costs at most ~12x, and 10,000 of anything
checks in under 2 s. Sizes are interleaved within each repetition (1k, 10k, 1k, 10k, ...) so
that load on a shared machine hits them alike; medians are reported.

    python benchmarks/bench_scaling.py [--repeats 3] [--sizes 1000 10000] [--only bindings ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import assembler
from assembler.errors import SpecError

LIB = "network lib(x: [4]) {\n    y = x -> linear(4)\n    return y\n}\n"


def networks(n: int) -> str:
    return "".join(f"network n{i}(x: [4]) {{\n    y = x -> relu\n    return y\n}}\n\n" for i in range(n))


def imports(n: int) -> str:
    uses = "".join(f'use "lib.net" as a{i}\n' for i in range(n))
    return uses + "\nnetwork n(x: [4]) {\n    y = x -> a0.y -> a1.y\n    return y\n}\n"


def settings(n: int) -> str:
    """One train section with n repeated settings: n - 1 errors to report."""
    body = "".join("    epochs = 3\n" for _ in range(n))
    return "network n(x: [4]) {\n    y = x -> linear(4)\n    return y\n}\n\ntrain n {\n" + body + "}\n"


def bindings(n: int) -> str:
    lines = ["network n(x: [4, 8, 8]) {"]
    prev = "x"
    for i in range(n):
        lines.append(f"    b{i} = add({prev}, {prev} -> conv(4, 3, pad=1))" if i % 5 == 4 else
                     f"    b{i} = {prev} -> conv(4, 3, pad=1) -> relu")
        prev = f"b{i}"
    return "\n".join(lines + [f"    return {prev}", "}", ""])


def templates(n: int) -> str:
    defs = "".join(f"block t{i}(c) = conv(c, 1) -> relu\n" for i in range(n))
    uses = " -> ".join(f"t{i}(4)" for i in range(n))
    return defs + f"\nnetwork n(x: [4, 8, 8]) {{\n    y = x -> {uses}\n    return y\n}}\n"


def matches(n: int) -> str:
    net = "network {}(x: [4, 8, 8]) {{\n    y = x -> conv(4, 1)\n    return y\n}}\n\n"
    return net.format("a") + net.format("b") + "".join("match a.y -> b.y : l2\n" for _ in range(n))


def errors(n: int) -> str:
    """One network whose n bindings each read an undefined name: n errors to report."""
    body = "".join(f"    b{i} = nope{i} -> relu\n" for i in range(n))
    return f"network n(x: [4]) {{\n{body}    return x\n}}\n"


DIMENSIONS = {"networks": networks, "imports": imports, "settings": settings, "bindings": bindings,
              "templates": templates, "matches": matches, "errors": errors}


def run(text: str, path: Path, clock) -> float:
    t = clock()
    try:
        assembler.check(assembler.parse(text, str(path)))
    except SpecError as e:
        e.render()
    return clock() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--only", nargs="+", choices=sorted(DIMENSIONS), default=list(DIMENSIONS))
    ap.add_argument("--cpu", action="store_true",
                    help="measure CPU time of this process instead of wall time (steadier on a loaded machine)")
    args = ap.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    folder = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    (folder / "lib.net").write_text(LIB)
    texts = {(d, n): DIMENSIONS[d](n) for d in args.only for n in args.sizes}
    times: dict[tuple[str, int], list[float]] = {k: [] for k in texts}
    for _ in range(args.repeats):
        for key, text in texts.items():
            times[key].append(run(text, folder / f"{key[0]}.net", clock))
    sizes = args.sizes
    print(f"{'CPU' if args.cpu else 'wall'} seconds of parse + check (+ render), median of {args.repeats}; load "
          f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'dimension':<10} " + " ".join(f"{n:>9,}" for n in sizes) + "   ratios (per 10x)")
    ok = True
    for d in args.only:
        med = [statistics.median(times[(d, n)]) for n in sizes]
        ratios = [b / a for a, b in zip(med, med[1:])]
        ok &= all(r <= 12 for r in ratios) and all(t < 2.0 for n, t in zip(sizes, med) if n <= 10000)
        print(f"{d:<10} " + " ".join(f"{t:8.3f}s" for t in med) + "   " + " ".join(f"{r:5.1f}x" for r in ratios))
    print("goal (each 10x at most ~12x; 10,000 of anything under 2 s):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
