"""The cost of a scan: per-point models vs one coupling-conditioned grid model, at equal
accuracy (issue 13, item 5). Prints JSON and a table; writes benchmarks/results/scan_cost.json.

The scan: lam = 1, ``--points`` values of m2 in [``--m2-lo``, ``--m2-hi``], N x N. Both
strategies get the same HMC data per point (Fourier-accelerated, 16 chains) and the same model
family (trace model in the Gaussian-exact wrapper, DSM, VP scheme). Per-point: one model per
point, ``--point-steps`` steps each. Grid: one conditioned model (rgdist.train.grid, serial
reduce), ``--grid-steps`` steps, each step one gradient per point. Then, per point and for both,
the exact correction: probability-flow proposals with the exact-trace density (split
integrator, 16 snr steps), reweighted; a pilot of ``--pilot`` proposals gives sigma(chi)/chi
and sigma(U), and the proposals are raised (in whole pilots) until both reach the targets
``--target-rel-chi`` and ``--target-abs-u`` at every point (or ``--max-proposals``). Core-s =
wall time x 1 thread, split into HMC, training and sampling+correction.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rgdist.correct import FlowProposal, WeightedAccumulator, log_weights
from rgdist.lattice import HMC, Lattice, Phi4Action
from rgdist.models import build_model
from rgdist.models.conditioning import CouplingWindow, SpectrumTable, condition_model, set_couplings
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum
from rgdist.train.grid import GridPointData, GridTrainer
from rgdist.train.objectives import kish_ess_fraction

LAM = 1.0


def gen(seed):
    return torch.Generator().manual_seed(seed)


def hmc_data(lat, m2, seed, n_traj):
    h = HMC(Phi4Action(m2, LAM), lat, 16, step_size=0.2, n_steps=5, fourier_accel=True,
            fa_mass2=0.1, generator=gen(seed))
    h.thermalize(100)
    kept = []
    for k in range(n_traj):
        h.trajectory()
        if k % 5 == 0:
            kept.append(h.phi.clone())
    return torch.cat(kept)


def new_model(lat, scheme, G, seed):
    return build_model("trace", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                       channels=4, global_channels=2, generator=gen(seed))


def correct(model, scheme, lat, m2, G, a, seed):
    """Proposals in pilots until the targets hold: (n, ess, chi, U, core-s)."""
    flow = FlowProposal(model, scheme, n_steps=16, grid="snr", prior_G=G, method="trace",
                        integrator="split", batch_size=256)
    t0, phis, lws, k = time.perf_counter(), [], [], 0
    while True:
        phi, lq = flow.sample(a.pilot, gen(seed + 7919 * k))
        phis.append(phi)
        lws.append(log_weights(phi, lq, Phi4Action(m2, LAM)))
        k += 1
        phi_all, lw = torch.cat(phis), torch.cat(lws)
        n = phi_all.shape[0]
        est = WeightedAccumulator(lat, 32).update(phi_all, lw, torch.arange(n) % 32).estimate()
        chi, U = est["chi"], est["binder"]
        ok = chi[1] / abs(chi[0]) <= a.target_rel_chi and U[1] <= a.target_abs_u
        if ok or n >= a.max_proposals:
            return {"n": n, "ess": kish_ess_fraction(lw), "chi": list(chi), "binder": list(U),
                    "reached": bool(ok), "core_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=8)
    ap.add_argument("--points", type=int, default=9)
    ap.add_argument("--m2-lo", type=float, default=-1.0)
    ap.add_argument("--m2-hi", type=float, default=-0.2)
    ap.add_argument("--hmc-traj", type=int, default=400)
    ap.add_argument("--point-steps", type=int, default=400)
    ap.add_argument("--grid-steps", type=int, default=150)
    ap.add_argument("--pilot", type=int, default=512)
    ap.add_argument("--target-rel-chi", type=float, default=0.03)
    ap.add_argument("--target-abs-u", type=float, default=0.03)
    ap.add_argument("--max-proposals", type=int, default=16384)
    ap.add_argument("--out", default="benchmarks/results/scan_cost.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    lat = Lattice(a.N)
    m2s = list(np.linspace(a.m2_lo, a.m2_hi, a.points))
    scheme = build_scheme("vp", lat)
    t0 = time.perf_counter()
    data = [hmc_data(lat, m2, 100 + i, a.hmc_traj) for i, m2 in enumerate(m2s)]
    hmc_s = time.perf_counter() - t0
    Gs = [measured_spectrum(d, lat) for d in data]
    cfg = dict(batch_size=64, lr=3e-3, warmup=10, ema_decay=0.99, log_every=0)
    out = {"config": vars(a), "hmc_core_s": hmc_s, "device": "cpu (AMD EPYC, 1 thread)"}
    # per-point models
    train_s, corr, pp = 0.0, [], []
    for i, m2 in enumerate(m2s):
        model = new_model(lat, scheme, Gs[i], 2)
        tr = Trainer(model, scheme, EnsembleData(data[i]), TrainConfig(steps=a.point_steps, **cfg),
                     gen(3 + i))
        t1 = time.perf_counter()
        tr.fit()
        train_s += time.perf_counter() - t1
        pp.append(correct(tr.ema_model(), scheme, lat, m2, Gs[i], a, 1000 * i))
        print(f"per-point m2={m2:+.3f}: {pp[-1]['n']} proposals, ESS/n {pp[-1]['ess']:.3f}",
              file=sys.stderr)
    out["per_point"] = {"train_core_s": train_s, "sample_core_s": sum(r["core_s"] for r in pp),
                        "points": pp}
    # one grid model
    model = new_model(lat, scheme, Gs[0], 2)
    condition_model(model, CouplingWindow.of([(m, LAM) for m in m2s]))
    pts = [GridPointData(i, m, LAM, Phi4Action(m, LAM), EnsembleData(data[i]), Gs[i])
           for i, m in enumerate(m2s)]
    gt = GridTrainer(model, scheme, pts, TrainConfig(steps=a.grid_steps, **cfg), n_points=len(m2s),
                     streams=lambda j, k: gen(7919 * j + k + 5))
    t1 = time.perf_counter()
    gt.fit()
    grid_train_s = time.perf_counter() - t1
    em = gt.ema_model()
    table = SpectrumTable([(m, LAM) for m in m2s], [g.numpy() for g in Gs])
    gr = []
    for i, m2 in enumerate(m2s):
        G = table.at(m2, LAM)
        set_couplings(em, m2, LAM, G)
        gr.append(correct(em, scheme, lat, m2, G, a, 1000 * i))
        print(f"grid m2={m2:+.3f}: {gr[-1]['n']} proposals, ESS/n {gr[-1]['ess']:.3f}", file=sys.stderr)
    out["grid"] = {"train_core_s": grid_train_s, "sample_core_s": sum(r["core_s"] for r in gr),
                   "points": gr}
    for k in ("per_point", "grid"):
        s = out[k]
        s["total_core_s"] = hmc_s + s["train_core_s"] + s["sample_core_s"]
        s["all_reached"] = all(r["reached"] for r in s["points"])
    out["ratio_per_point_over_grid"] = out["per_point"]["total_core_s"] / out["grid"]["total_core_s"]
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(f"{'':10s} {'HMC':>8s} {'train':>8s} {'sample':>8s} {'total':>8s}  reached", file=sys.stderr)
    for k in ("per_point", "grid"):
        s = out[k]
        print(f"{k:10s} {hmc_s:8.1f} {s['train_core_s']:8.1f} {s['sample_core_s']:8.1f} "
              f"{s['total_core_s']:8.1f}  {s['all_reached']}", file=sys.stderr)
    print(f"per-point / grid total core-s: {out['ratio_per_point_over_grid']:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
