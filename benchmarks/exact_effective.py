"""Exact correction with a closed-form-Jacobian proposal (JSON to stdout, table to stderr).

HMC reference at lam = 1 (256 chains, errors by jackknife over chains; every 50th trajectory
kept as training data), a Gaussian-exact effective-action model (phi2, grad2, phi4) trained
by DSM for ``--train-steps`` steps, ``--proposals`` draws of the probability-flow sampler
(``--integrator``, ``--steps`` steps on a log grid) with their exact discrete-map density;
raw, self-normalized reweighted and independence-MH (64 chains replaying the same draws,
``--burn-fraction`` of each chain discarded) estimates against HMC as z-scores.

    python benchmarks/exact_effective.py --N 16 --train-steps 1000 --proposals 4096
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from rgdist.exact import (FlowProposal, IndependenceMH, ReplayProposal, WeightedAccumulator,
                          ess_fraction, log_weights)
from rgdist.lattice import HMC, Lattice, Phi4Action
from rgdist.measure import ObservableAccumulator
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum

KEYS = ("chi", "binder", "abs_m", "xi2")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def z(a, b) -> float:
    return (a[0] - b[0]) / math.hypot(a[1], b[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--m2", type=float, default=-1.0)
    ap.add_argument("--traj", type=int, default=1600)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--proposals", type=int, default=4096)
    ap.add_argument("--integrator", default="exponential", choices=("heun", "exponential",
                                                                     "implicit"))
    ap.add_argument("--burn-fraction", type=float, default=1 / 3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lat, action = Lattice(a.N), Phi4Action(a.m2, 1.0)
    out = {"config": vars(a), "torch": torch.__version__}
    t0 = time.perf_counter()
    hmc = HMC(action, lat, 256, step_size=0.1, n_steps=10, generator=gen(1))
    hmc.thermalize(200)
    acc, bins, keep = ObservableAccumulator(lat, 32), torch.arange(256) % 32, []
    for k in range(a.traj):
        hmc.trajectory()
        if k % 2 == 0:
            acc.update(hmc.phi, bins)
        if k % 50 == 0:
            keep.append(hmc.phi.clone())
    ref, data = acc.estimate(), torch.cat(keep)
    G = measured_spectrum(data, lat)
    out["hmc_s"] = time.perf_counter() - t0
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    model = build_model("effective", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        operators=("phi2", "grad2", "phi4"), generator=gen(2))
    t0 = time.perf_counter()
    trainer = Trainer(model, scheme, EnsembleData(data),
                      TrainConfig(steps=a.train_steps, batch_size=64, lr=1e-2, log_every=0),
                      gen(3))
    trainer.fit()
    out["train_s"] = time.perf_counter() - t0
    model = trainer.ema_model().double()
    for p in model.parameters():
        p.requires_grad_(False)
    prop = FlowProposal(model, scheme, n_steps=a.steps, grid="log", prior_G=G,
                        method="discrete", integrator=a.integrator)
    t0 = time.perf_counter()
    phi, log_q = prop.sample(a.proposals, gen(4))
    out["s_per_proposal"] = (time.perf_counter() - t0) / a.proposals
    ok = torch.isfinite(phi).flatten(1).all(1)
    out["nonfinite"] = int((~ok).sum())
    phi = torch.where(ok.view(-1, 1, 1), phi, torch.zeros_like(phi))
    lw = log_weights(phi, log_q, action)
    lw = torch.where(ok, lw, torch.full_like(lw, -math.inf))
    b = torch.arange(a.proposals) % 32
    raw = ObservableAccumulator(lat, 32).update(phi[ok], b[ok]).estimate()
    rw = WeightedAccumulator(lat, 32).update(phi, lw, b).estimate()
    chain = IndependenceMH(ReplayProposal(phi, log_q), action, lat, 64, generator=gen(5))
    n_steps = a.proposals // 64 - 1
    burn = int(a.burn_fraction * n_steps)
    mh = chain.run(n_steps - burn, burn_in=burn, n_bins=32)
    out.update(ess_fraction=ess_fraction(lw), acceptance=mh.acceptance,
               tau_int={k: v[0] for k, v in mh.tau_int.items()},
               reference={k: ref[k] for k in KEYS},
               z={name: {k: z(est[k], ref[k]) for k in KEYS}
                  for name, est in (("raw", raw), ("reweighted", rw), ("mh", mh.estimates))},
               err={name: {k: est[k][1] for k in KEYS}
                    for name, est in (("reweighted", rw), ("mh", mh.estimates))})
    print(json.dumps(out, indent=1))
    print(f"N = {a.N}: ESS/n {out['ess_fraction']:.3f}, MH acceptance {mh.acceptance:.2f}, "
          f"{out['s_per_proposal'] * 1e3:.1f} ms/proposal", file=sys.stderr)
    for k in KEYS:
        print(f"  {k:>7}: HMC {ref[k][0]:.5g} +- {ref[k][1]:.2g} | z raw {out['z']['raw'][k]:+.2f}"
              f" reweighted {out['z']['reweighted'][k]:+.2f} MH {out['z']['mh'][k]:+.2f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
