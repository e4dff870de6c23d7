"""Max-pools on CPU: exact formulations against F.max_pool2d, and whole networks with max_pool.

Each formulation against `F.max_pool2d` on a channels-last tensor (what the inference
compilation used for NetTailor's proxies before `max_pool`), and a 3x3 conv on the same map for
scale: interleaved rounds, median of per-round time ratios (below 1: faster than F.max_pool2d).
Every formulation is first checked to give exactly the baseline's values.

The shapes: the proxies' in specs/digits/tailor_resnet.net (16 channels at 8x8 and 32 at 4x4,
pooled 3x3 stride 2 and 5x5 stride 4), the 2x2 pool of source.net, and a ResNet stem's pool of
a 32x32 image (64 channels at 16x16), at batch 256, 64 and 1. Each call here reads a map that
is hot in cache; inside a network the map may not be (benchmarks/bench_inference.py measures
whole networks).

Then whole networks at batch 256, inference-compiled with `max_pool` against the same graphs
calling F.max_pool2d (and a `pooled_cat` that does), where the pooled maps are no longer hot
in cache: the demo's tailored network and its teacher (`make demo`'s checkpoint), and
tailor_resnet.net's k = 1 candidate and its teacher; each trained if missing.

    python benchmarks/bench_pool.py [--rounds 100] [--threads 1] [--checkpoint runs/demo/tailored]
                                    [--k1 runs/bench-pool/resnet-k1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from assembler import inference_fuse
from assembler.allocator import steady_allocator
from assembler.measure import interleaved_latency, median_ratio

CASES = [((256, 16, 8, 8), (3, 2, 1)), ((256, 32, 4, 4), (3, 2, 1)), ((256, 16, 8, 8), (5, 4, 2)),
         ((256, 32, 8, 8), (2, 2, 0)), ((64, 64, 16, 16), (3, 2, 1)), ((1, 16, 8, 8), (3, 2, 1))]


def padded(x: torch.Tensor, p: int) -> torch.Tensor:
    return F.pad(x, (p, p, p, p), value=float("-inf")).contiguous(memory_format=torch.channels_last)


def separable(x, k, s, p):
    """Rows, then columns: two 1-D pools (max is separable over a rectangular window)."""
    return F.max_pool2d(F.max_pool2d(x, (k, 1), (s, 1), (p, 0)), (1, k), (1, s), (0, p))


def shifted(x, k, s, p):
    """Elementwise maxima of k strided views per direction of the -inf-padded map."""
    xp = padded(x, p)
    n = (xp.shape[2] - k) // s + 1
    r = xp[:, :, 0:s * (n - 1) + 1:s, :]
    for i in range(1, k):
        r = torch.maximum(r, xp[:, :, i:i + s * (n - 1) + 1:s, :])
    m = (xp.shape[3] - k) // s + 1
    c = r[:, :, :, 0:s * (m - 1) + 1:s]
    for j in range(1, k):
        c = torch.maximum(c, r[:, :, :, j:j + s * (m - 1) + 1:s])
    return c


def windows_amax(x, k, s, p):
    """`amax` over strided windows (no copy but the padding), rows then columns."""
    n, c, h, w = x.shape
    xp = padded(x, p)
    hp, wp = h + 2 * p, w + 2 * p
    ho, wo = (hp - k) // s + 1, (wp - k) // s + 1
    r = xp.as_strided((n, ho, wp, k, c), (hp * wp * c, s * wp * c, c, wp * c, 1)).amax(dim=3)
    return r.as_strided((n, ho, wo, k, c), (ho * wp * c, wp * c, s * c, c, 1)).amax(dim=3).permute(0, 3, 1, 2)


def pool1d(x, k, s, p):
    """`max_pool1d` (ATen's index-free CPU kernel) with dilation C over the NHWC memory, per direction."""
    n, c, h, w = x.shape
    y = F.pad(x.permute(0, 2, 3, 1).reshape(n * h, 1, w * c), (p * c, p * c), value=float("-inf"))
    r = F.max_pool1d(y, k, 1, 0, dilation=c)
    r = r.view(n, h, -1, c)[:, :, ::s]
    wo = r.shape[2]
    q = F.max_pool1d(F.pad(r.reshape(n, 1, h * wo * c), (p * wo * c, p * wo * c), value=float("-inf")), k, 1, 0,
                     dilation=wo * c)
    return q.view(n, -1, wo, c)[:, ::s].permute(0, 3, 1, 2)


def views(x, k, s, p):
    """`assembler.inference_fuse.max_pool`'s large-map path: maxima of strided views clipped at
    the borders (no padding copy, no indices), rows then columns."""
    rows, cols = inference_fuse._plan(x.shape[2], k, s, p), inference_fuse._plan(x.shape[3], k, s, p)
    return inference_fuse._max_along(inference_fuse._max_along(x, 2, s, p, rows), 3, s, p, cols)


def mkldnn(x, k, s, p):
    """A round trip through a mkldnn tensor and its pool."""
    return torch.mkldnn_max_pool2d(x.to_mkldnn(), [k, k], [s, s], [p, p]).to_dense()


FORMULATIONS = {"F.max_pool2d, NCHW": None, "clipped views (max_pool)": views, "separable 2-D pools": separable,
                "shifted maxima": shifted,
                "strided windows + amax": windows_amax, "max_pool1d, dilated": pool1d, "mkldnn round trip": mkldnn}


def kernel_pooled_cat(tensors, kernel, stride, padding=0):
    """`inference_fuse.pooled_cat` with ATen's kernel on the pool-first path (as before max_pool)."""
    if sum(t.numel() for t in tensors) <= inference_fuse.POOL_CAT_SMALL:
        return F.max_pool2d(torch.cat(tensors, 1), kernel, stride, padding)
    return torch.cat([F.max_pool2d(t, kernel, stride, padding) for t in tensors], 1)


def without_views(gm):
    """A copy of an inference-compiled network calling ATen's max-pool kernel everywhere."""
    out = copy.deepcopy(gm)
    for n in out.graph.nodes:
        if n.target is inference_fuse.max_pool:
            n.target = F.max_pool2d
        elif n.target is inference_fuse.pooled_cat:
            n.target = kernel_pooled_cat
    out.recompile()
    return out


def networks(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_tailored import tailored
    from assembler import inference
    print("\nwhole networks, batch 256: time with max_pool / time with F.max_pool2d, median of rounds")
    print("| network | with F.max_pool2d | with max_pool / with F.max_pool2d |\n|---|---:|---:|")
    # the demo's network, and tailor_resnet.net's k = 1 candidate (one block of six removed, its proxies kept)
    for label, asm in ((f"demo ({args.checkpoint})", tailored(args.checkpoint)),
                       (f"tailor_resnet k = 1 ({args.k1})",
                        tailored(args.k1, "tailor_resnet.net", ("procedure.blocks=[1]",)))):
        x = inference.example_inputs(asm.checked.networks["student"].inputs, batch=256)
        nets = {}
        for name in ("teacher", "student"):
            nets[name] = inference.compile(asm, name)
            nets[f"{name}, kernel"] = without_views(nets[name])
            assert inference.max_abs_diff(nets[name], nets[f"{name}, kernel"], x) == 0.0
        times = interleaved_latency(nets, x, rounds=args.rounds)
        for name in ("teacher", "student"):
            print(f"| {label}: {name} | {statistics.median(times[f'{name}, kernel']) * 1e3:.3f} ms | "
                  f"{median_ratio(times, name, f'{name}, kernel'):.3f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/demo/tailored"))
    ap.add_argument("--k1", type=Path, default=Path("runs/bench-pool/resnet-k1"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steady_allocator()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} interleaved rounds; time / time of "
          "F.max_pool2d on the channels-last map (median of rounds)")
    names = list(FORMULATIONS) + ["3x3 conv, same channels"]
    print("| input | pool (k, s, p) | F.max_pool2d | " + " | ".join(names) + " |")
    print("|---|---|---:|" + "---:|" * len(names))
    for shape, (k, s, p) in CASES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)
        xc = x.contiguous()
        w = torch.randn(shape[1], shape[1], 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
        fns = {"F.max_pool2d": lambda: F.max_pool2d(x, k, s, p), "F.max_pool2d, NCHW": lambda: F.max_pool2d(xc, k, s, p),
               "3x3 conv, same channels": lambda: torch.conv2d(x, w, None, 1, 1)}
        for name, fn in FORMULATIONS.items():
            if fn is not None:
                fns[name] = (lambda fn=fn: fn(x, k, s, p))
        with torch.no_grad():
            ref = fns["F.max_pool2d"]()
            for name in FORMULATIONS:
                if not torch.equal(fns[name](), ref):
                    raise SystemExit(f"{name} differs from F.max_pool2d on {shape}, {(k, s, p)}")
        times = interleaved_latency({n: (lambda f=f: f()) for n, f in fns.items()}, (), rounds=args.rounds,
                                    number=200 if shape[0] == 1 else 5)
        base = statistics.median(times["F.max_pool2d"]) * 1e6
        print(f"| {list(shape)} | {(k, s, p)} | {base:.1f} µs | "
              + " | ".join(f"{median_ratio(times, n, 'F.max_pool2d'):.2f}" for n in names) + " |", flush=True)
    networks(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
