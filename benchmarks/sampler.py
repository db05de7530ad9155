"""Sampler throughput and the score network's arithmetic efficiency (JSON to stdout, table to
stderr).

1. Throughput: configurations per second and score evaluations (NFE) per configuration of
   every solver (rgdist.sample.sample_ensemble) at N = 16, 32, 64 (batch 256; --quick: N = 16,
   32, batch 64, fewer steps), with the default score model (GaussianExact ConvScore,
   16 channels, 2 residual blocks, float64), Carosso scheme.
2. FLOPs: the model's forward cost counted analytically from its convolutions,

       MACs/site = k^d (2 C + 2 C^2 n_blocks + C)    (conv_in 2->C, 2 convs C->C per block,
                                                      conv_out C->1; k = 3, d = 2)
       FLOPs/config = 2 MACs/site V  (+ small terms: the C x C global-mean maps, tanh, FFTs),

   cross-checked with torch.utils.flop_counter, and the measured forward throughput
   (FLOP/s) as a fraction of the machine's measured peak: a large torch.matmul and a large
   conv2d timed on the same machine, in the model's dtype.

    OMP_NUM_THREADS=1 python benchmarks/sampler.py [--quick] [--threads 1] [--dtype float64]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from rgdist.lattice import Lattice
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.sample import SOLVERS, sample_ensemble

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def best_time(fn, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_flops(dtype, quick: bool) -> dict:
    """Measured FLOP/s of a large matmul and a large 3x3 conv2d."""
    n = 1024 if quick else 2048
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    t_mm = best_time(lambda: torch.matmul(a, b), 3)
    x = torch.randn(16 if quick else 32, 64, 64, 64, dtype=dtype)
    w = torch.randn(64, 64, 3, 3, dtype=dtype)
    t_conv = best_time(lambda: F.conv2d(x, w, padding=1), 3)
    conv_flops = 2 * x.shape[0] * 64 * 64 * 64 * 64 * 9
    return {"matmul_n": n, "matmul_flops_per_s": 2 * n**3 / t_mm,
            "conv_shape": list(x.shape), "conv_flops_per_s": conv_flops / t_conv}


def model_macs_per_site(channels: int, blocks: int, kernel: int = 3, d: int = 2) -> int:
    return kernel**d * (2 * channels + 2 * channels**2 * blocks + channels)


def build(n: int, dtype: str, channels: int, blocks: int):
    lat = Lattice(n)
    scheme = build_scheme("carosso", lat)
    G = 1.0 / (lat.phat2() + 0.3)  # any positive spectrum: the cost does not depend on it
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=channels, blocks=blocks, dtype=dtype).eval()
    return lat, scheme, G, model


def forward_cost(n: int, batch: int, dtype: str, channels: int, blocks: int, repeats: int) -> dict:
    lat, scheme, G, model = build(n, dtype, channels, blocks)
    phi = lat.colored_noise(G, batch, torch.Generator().manual_seed(0))
    t = torch.full((batch,), 1.0, dtype=torch.float64)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model.net(phi, t)
        counted = counter.get_total_flops()
        seconds = best_time(lambda: model.net(phi, t), repeats)
        seconds_full = best_time(lambda: model(phi, t), repeats)
    analytic = 2 * model_macs_per_site(channels, blocks) * lat.volume * batch
    return {"N": n, "batch": batch, "analytic_flops": analytic, "counted_flops": counted,
            "net_seconds": seconds, "net_flops_per_s": analytic / seconds,
            "score_seconds": seconds_full, "score_evals_per_s": batch / seconds_full}


def throughput(n: int, batch: int, n_steps: int, dtype: str, channels: int, blocks: int) -> list:
    lat, scheme, G, model = build(n, dtype, channels, blocks)
    out = []
    for solver in SOLVERS:
        with torch.no_grad():
            t0 = time.perf_counter()
            res = sample_ensemble(model, scheme, batch, n_steps=n_steps, solver=solver,
                                  grid="log", batch_size=batch, seed_streams=(1, solver),
                                  prior_G=G)
            dt = time.perf_counter() - t0
        out.append({"N": n, "solver": solver, "n_steps": n_steps, "batch": batch,
                    "seconds": dt, "configs_per_s": batch / dt, "nfe_per_config": res.nfe,
                    "finite": bool(torch.isfinite(res.samples).all())})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [16, 32] if args.quick else [16, 32, 64]
    batch = 64 if args.quick else 256
    n_steps = 10 if args.quick else 50
    out = {"config": {"quick": args.quick, "threads": args.threads, "dtype": args.dtype,
                      "channels": args.channels, "blocks": args.blocks, "batch": batch,
                      "n_steps": n_steps, "scheme": "carosso", "grid": "log",
                      "torch": torch.__version__},
           "peak": peak_flops(DTYPES[args.dtype], args.quick), "forward": [], "throughput": []}
    peak = out["peak"]
    print(f"peak: matmul {peak['matmul_flops_per_s'] / 1e9:.2f} GFLOP/s, "
          f"conv2d {peak['conv_flops_per_s'] / 1e9:.2f} GFLOP/s ({args.dtype}, "
          f"{args.threads} thread(s))", file=sys.stderr)
    print(f"{'N':>4} {'MFLOP/cfg':>10} {'counted':>10} {'GFLOP/s':>8} {'%conv':>6} {'%mm':>6} "
          f"{'score/s':>9}", file=sys.stderr)
    for n in sizes:
        r = forward_cost(n, batch, args.dtype, args.channels, args.blocks, 2 if args.quick else 5)
        r["fraction_of_conv_peak"] = r["net_flops_per_s"] / peak["conv_flops_per_s"]
        r["fraction_of_matmul_peak"] = r["net_flops_per_s"] / peak["matmul_flops_per_s"]
        out["forward"].append(r)
        print(f"{n:>4} {r['analytic_flops'] / batch / 1e6:10.3f} "
              f"{r['counted_flops'] / batch / 1e6:10.3f} {r['net_flops_per_s'] / 1e9:8.2f} "
              f"{100 * r['fraction_of_conv_peak']:6.1f} {100 * r['fraction_of_matmul_peak']:6.1f} "
              f"{r['score_evals_per_s']:9.1f}", file=sys.stderr)
    print(f"{'N':>4} {'solver':>15} {'steps':>5} {'NFE/cfg':>8} {'cfg/s':>9}", file=sys.stderr)
    for n in sizes:
        for r in throughput(n, batch, n_steps, args.dtype, args.channels, args.blocks):
            out["throughput"].append(r)
            print(f"{n:>4} {r['solver']:>15} {r['n_steps']:>5} {r['nfe_per_config']:>8} "
                  f"{r['configs_per_s']:9.2f}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
