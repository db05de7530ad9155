"""Where the time of training and sampling goes, at N = 16 (JSON to stdout, a table to stderr).

Model: the acceptance-test score model, a GaussianExact ConvScore (16 channels, 2 residual
blocks, global-mean channel) on the Carosso scheme (mu2 = 0.1, T = 40), data spectrum from
unit white noise (the numbers are timings only; the data do not change them).

For every (dtype, channels_last, batch) in the grid the script times

    train_step_s       one Trainer.train_step (minibatch, DSM loss, backward, clip, Adam,
                       EMA, NaN-guard snapshot)
    net_fwd_s          the bare ConvScore forward at that batch
    net_fwd_bwd_s      ConvScore forward + backward of sum(out^2)
    wrapper_fwd_s      the GaussianExact forward (net + exact Gaussian score + r_t)
    sampler_step_s     one exponential-solver step of sample_ensemble (per step, averaged
                       over an n_steps = 20 run, under torch.inference_mode)
    score_eval_s       one GaussianExact forward at a common t (what the sampler calls)

each as the median of ``repeats`` timings after a warm-up, and also the per-configuration
costs (seconds / batch). ``--threads`` sets torch's intra-op threads (default 1).

    OMP_NUM_THREADS=1 python benchmarks/train_profile.py [--quick] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from rgdist.lattice import Lattice
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.sample import sample_ensemble
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def setup(N: int, dtype: str, channels_last: bool, channels: int, blocks: int):
    lat = Lattice(N)
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    configs = lat.white_noise(2048, torch.Generator().manual_seed(0))
    G = measured_spectrum(configs, lat)
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=channels, blocks=blocks, dtype=dtype,
                        channels_last=channels_last)
    return lat, scheme, configs, G, model


def profile_point(N: int, dtype: str, channels_last: bool, batch: int, *, channels: int,
                  blocks: int, repeats: int, sampler_steps: int) -> dict:
    lat, scheme, configs, G, model = setup(N, dtype, channels_last, channels, blocks)
    cfg = TrainConfig(steps=10**6, batch_size=batch, lr=1e-3, log_every=0, t_sampler="log")
    trainer = Trainer(model, scheme, EnsembleData(configs), cfg, torch.Generator().manual_seed(1))
    out = {"N": N, "dtype": dtype, "channels_last": channels_last, "batch": batch}
    out["train_step_s"] = median_time(trainer.train_step, repeats)

    g = torch.Generator().manual_seed(2)
    phi = lat.white_noise(batch, g)
    t = 0.1 + 10 * torch.rand(batch, generator=g, dtype=torch.float64)
    net = model.net
    pdt = net.param_dtype

    def fwd():
        with torch.no_grad():
            net(phi, t)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        x = phi.to(pdt).requires_grad_(False)
        (net(x, t.to(pdt)) ** 2).sum().backward()

    def wrapper():
        with torch.no_grad():
            model(phi, t)

    t_common = torch.full((batch,), 3.0, dtype=torch.float64)

    def score_eval():
        with torch.inference_mode():
            model(phi, t_common)

    out["net_fwd_s"] = median_time(fwd, repeats)
    out["net_fwd_bwd_s"] = median_time(fwd_bwd, repeats)
    out["wrapper_fwd_s"] = median_time(wrapper, repeats)
    out["score_eval_s"] = median_time(score_eval, repeats)

    def sample():
        with torch.inference_mode():
            sample_ensemble(model, scheme, batch, n_steps=sampler_steps, solver="exponential",
                            grid="log", batch_size=batch, prior_G=G, seed_streams=(3,))

    out["sampler_step_s"] = median_time(sample, max(1, repeats // 4)) / (sampler_steps + 1)
    for key in ("train_step_s", "sampler_step_s", "score_eval_s"):
        out[key.replace("_s", "_per_config_ms")] = 1e3 * out[key] / batch
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one batch size, fewer repeats")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [128] if args.quick else [128, 256]
    repeats = 5 if args.quick else 15
    rows = []
    print(f"{'dtype':>8} {'c_last':>6} {'batch':>5} {'train':>9} {'fwd':>8} {'fwd+bwd':>8} "
          f"{'wrapper':>8} {'score':>8} {'smp step':>9}  (ms)", file=sys.stderr)
    for dtype in ("float64", "float32"):
        for channels_last in (False, True):
            for batch in batches:
                r = profile_point(args.N, dtype, channels_last, batch, channels=args.channels,
                                  blocks=args.blocks, repeats=repeats,
                                  sampler_steps=8 if args.quick else 20)
                rows.append(r)
                print(f"{dtype:>8} {str(channels_last):>6} {batch:>5} "
                      f"{1e3 * r['train_step_s']:9.2f} {1e3 * r['net_fwd_s']:8.2f} "
                      f"{1e3 * r['net_fwd_bwd_s']:8.2f} {1e3 * r['wrapper_fwd_s']:8.2f} "
                      f"{1e3 * r['score_eval_s']:8.2f} {1e3 * r['sampler_step_s']:9.2f}",
                      file=sys.stderr, flush=True)
    out = {"config": {"N": args.N, "channels": args.channels, "blocks": args.blocks,
                      "threads": args.threads, "torch": torch.__version__,
                      "scheme": "carosso(T=40, mu2=0.1)", "model": "gaussian_exact conv"},
           "rows": rows}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
