"""Does RG-shaped noising help? The same sampler under every noising scheme at N = 16 criticality.

lam = 1, m2 = -1.27, N = 16. HMC data (Fourier-accelerated; training data and an independent
reference run), then per scheme (carosso, polchinski, renormalized_polchinski, vp, ve with
their catalog defaults): the trace model (4 channels, 2 global) in the Gaussian-exact wrapper
of the measured spectrum, trained by DSM for ``--steps`` steps (batch 64), then
``--proposals`` draws of the probability-flow ODE by the split integrator with the exact
trace on the snr grid (``--n-steps`` steps; NFE = 4 evaluations per step), reweighted to the
target. Per scheme: ESS/n (Kish), Pareto k, reweighted chi and U with z-scores against the HMC
reference, ESS per NFE, training and sampling core-s (1 thread). Same model, data, seeds and
budget for every scheme: only the noising differs.

    python benchmarks/scheme_compare.py [--steps 2000 --proposals 4096]
writes benchmarks/results/scheme_compare.json.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from rgdist.correct import FlowProposal, WeightedAccumulator, log_weights
from rgdist.correct.reweight import pareto_k
from rgdist.lattice import Lattice, Phi4Action
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum
from rgdist.train.objectives import kish_ess_fraction

from fa_data import fa_hmc  # benchmarks/fa_data.py

REPO = Path(__file__).resolve().parents[1]
SCHEMES = ("carosso", "polchinski", "renormalized_polchinski", "vp", "ve")
N, M2, LAM = 16, -1.27, 1.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hmc(lat, seed, n_traj, chains):
    return fa_hmc(lat, M2, LAM, seed, n_traj, chains, therm=200)


def row(name, lat, data, G, ref, a):
    scheme = build_scheme(name, lat)
    model = build_model("trace", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=4, global_channels=2, generator=gen(2))
    cfg = TrainConfig(steps=a.steps, batch_size=64, lr=3e-3, warmup=10, ema_decay=0.99,
                      log_every=0)
    trainer = Trainer(model, scheme, EnsembleData(data), cfg, generator=gen(5))
    t0 = time.process_time()
    trainer.fit()
    train_s = time.process_time() - t0
    flow = FlowProposal(trainer.ema_model(), scheme, n_steps=a.n_steps, grid="snr", prior_G=G,
                        method="trace", integrator="split", batch_size=256)
    t0 = time.process_time()
    phi, log_q = flow.sample(a.proposals, gen(4))
    lw = log_weights(phi, log_q, Phi4Action(M2, LAM))
    sample_s = time.process_time() - t0
    out = {"scheme": name, "params": scheme.params() if hasattr(scheme, "params") else {},
           "train_core_s": train_s, "sample_core_s": sample_s, "nfe": 4 * a.n_steps}
    if not torch.all(torch.isfinite(lw)):
        return {**out, "status": f"{int((~torch.isfinite(lw)).sum())} non-finite log-weights"}
    rw = WeightedAccumulator(lat, 32).update(phi, lw, torch.arange(a.proposals) % 32).estimate()
    ess = float(kish_ess_fraction(lw))
    z = {o: (rw[o][0] - ref[o][0]) / math.hypot(rw[o][1], ref[o][1]) for o in ("chi", "binder")}
    return {**out, "status": "ok", "ess_fraction": ess, "pareto_k": float(pareto_k(lw)),
            "ess_per_nfe": ess / (4 * a.n_steps),
            "chi": [float(x) for x in rw["chi"]], "binder": [float(x) for x in rw["binder"]],
            "z_chi": float(z["chi"]), "z_binder": float(z["binder"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--n-steps", type=int, default=16)
    ap.add_argument("--proposals", type=int, default=4096)
    ap.add_argument("--chains", type=int, default=32)
    ap.add_argument("--hmc-traj", type=int, default=1500)
    ap.add_argument("--ref-traj", type=int, default=4000)
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scheme_compare.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lat = Lattice(N)
    data, _ = hmc(lat, 11, a.hmc_traj, a.chains)
    _, ref = hmc(lat, 99, a.ref_traj, a.chains)
    G = measured_spectrum(data, lat)
    rows = [row(name, lat, data, G, ref, a) for name in a.schemes]
    out = {"benchmark": "scheme_compare", "N": N, "m2": M2, "lam": LAM, "threads": a.threads,
           "train_steps": a.steps, "n_steps": a.n_steps, "proposals": a.proposals,
           "hmc_chi": [float(x) for x in ref["chi"]], "hmc_binder": [float(x) for x in ref["binder"]],
           "model": "trace (4 ch, 2 global), Gaussian-exact, DSM; split flow, exact trace, snr grid",
           "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(f"\n{'scheme':<25}{'ESS/n':>8}{'k':>7}{'ESS/NFE':>10}{'z chi':>8}{'z U':>8}{'train s':>9}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['scheme']:<25}{r['status']}")
            continue
        print(f"{r['scheme']:<25}{r['ess_fraction']:>8.3f}{r['pareto_k']:>7.2f}{r['ess_per_nfe']:>10.2e}"
              f"{r['z_chi']:>+8.2f}{r['z_binder']:>+8.2f}{r['train_core_s']:>9.1f}")


if __name__ == "__main__":
    main()
