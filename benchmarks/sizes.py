"""HMC vs the exactly corrected diffusion sampler at one lattice size (JSON to stdout, table to
stderr). Run once per N; ``--table`` prints the README table from saved JSON files.

At lam = 1, m2 = ``--m2`` (default -1.0, the symmetric side of the transition, U > 0):

1. HMC, leapfrog (trajectory length 1, step size adapted to 90% acceptance while
   thermalizing) and Fourier-accelerated (kinetic mass phat^2 + 0.1): core-seconds per
   effectively independent configuration, cost = core_s 2 tau_int / n_configurations, with
   tau_int of M^2 (chi) and max over M^2, M^4 (Binder U) by the Gamma method.
2. The diffusion sampler: a Gaussian-exact effective-action model (phi2, grad2, phi4 running
   couplings; closed-form Jacobian) trained by DSM for ``--train-steps`` steps on every
   ``--keep``-th HMC configuration (training core-seconds amortized over 1e5
   configurations), ``--steps`` probability-flow steps (``--integrator``) on a log grid.
   Density: "discrete" (exact density of the map actually run; V <= 1024) or "trace" (the
   continuous ODE density along the path, O(h^2) off the sampler's: labelled approximate).
   ``--proposals`` draws give ESS/n = 1/(n sum w_i^2) (normalized weights) and the same draws
   replayed over 16 independence-MH chains (a quarter of each discarded) give the acceptance and tau_int. Costs:
   cost_is = s/proposal / (ESS/n), cost_mh = s/proposal 2 tau_int(M^2), each + amortized
   training. z-scores of the corrected chi and U against the leapfrog HMC run.

    python benchmarks/sizes.py --N 32 --proposals 512 > benchmarks/results/sizes_n32.json
    python benchmarks/sizes.py --table benchmarks/results/sizes_n*.json
    python benchmarks/sizes.py --N 32 --hmc-scan > benchmarks/results/sizes_hmc_scan_n32.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import torch

from rgdist.correct import (FlowProposal, IndependenceMH, ReplayProposal, WeightedAccumulator,
                          ess_fraction, log_weights, pareto_k)
from rgdist.lattice import Lattice, Phi4Action
from rgdist.measure import ObservableAccumulator
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum
from vs_hmc import AMORTIZE, LAM, gen, hmc_cost, log


def z(a, b) -> float:
    return float((a[0] - b[0]) / math.hypot(a[1], b[1]))


def diffusion(a, lat, action, configs, ref) -> dict:
    G = measured_spectrum(configs, lat)
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    model = build_model("effective", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        operators=("phi2", "grad2", "phi4"), generator=gen(2))
    t0 = time.perf_counter()
    trainer = Trainer(model, scheme, EnsembleData(configs),
                      TrainConfig(steps=a.train_steps, batch_size=64, lr=1e-2, log_every=0),
                      gen(3))
    trainer.fit()
    train_core_s = (time.perf_counter() - t0) * a.threads
    model = trainer.ema_model().double()
    for p in model.parameters():
        p.requires_grad_(False)
    prop = FlowProposal(model, scheme, n_steps=a.steps, grid="log", prior_G=G,
                        method=a.likelihood, integrator=a.integrator, batch_size=a.batch_size)
    t0 = time.perf_counter()
    with torch.no_grad():
        phi, log_q = prop.sample(a.proposals, gen(4))
    s_prop = (time.perf_counter() - t0) * a.threads / a.proposals
    ok = torch.isfinite(phi).flatten(1).all(1) & torch.isfinite(log_q)
    phi = torch.where(ok.view(-1, *(1,) * lat.d), phi, torch.zeros_like(phi))
    # failed draws (non-finite field or density) get weight 0: log q = +inf there
    lw = log_weights(phi, torch.where(ok, log_q, math.inf), action)
    n_bins = 32
    b = torch.arange(a.proposals) % n_bins
    raw = ObservableAccumulator(lat, n_bins).update(phi[ok], b[ok]).estimate()
    rw = WeightedAccumulator(lat, n_bins).update(phi, lw, b).estimate()
    n_chains = 16  # few long chains: short IMH chains under-visit rare high-weight states
    steps = a.proposals // n_chains - 1
    burn = steps // 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mh = IndependenceMH(ReplayProposal(phi, log_q), action, lat,
                            n_chains, generator=gen(5)).run(steps - burn, burn_in=burn,
                                                            n_bins=n_bins)
    ess = ess_fraction(lw)
    tau = mh.tau_int["m2"][0]
    amort = train_core_s / AMORTIZE
    return {"model": "effective phi2+grad2+phi4, gaussian_exact", "train_steps": a.train_steps,
            "train_core_s": train_core_s, "integrator": a.integrator, "n_steps": a.steps,
            "likelihood": a.likelihood, "exact_density": a.likelihood == "discrete",
            "nfe_per_proposal": prop.nfe, "n_proposals": a.proposals,
            "nonfinite": int((~ok).sum()), "n_nonpositive_det": prop.n_nonpositive_det,
            "core_s_per_proposal": s_prop, "ess_fraction": ess, "pareto_k": pareto_k(lw), "mh_acceptance": mh.acceptance,
            "mh_tau_chi": tau, "mh_steps": steps - burn, "cost_is": s_prop / ess + amort,
            "cost_mh": s_prop * 2 * tau + amort, "training_amortized": amort,
            "z": {name: {k: z(est[k], ref[k]) for k in ("chi", "binder")}
                  for name, est in (("raw", raw), ("reweighted", rw), ("mh", mh.estimates))}}


def hmc_scan(a) -> None:
    """Trajectory-length scan of HMC at one size: JSON rows to stdout, a table to stderr."""
    torch.set_num_threads(a.threads)
    rows = []
    for fourier, lengths in ((False, (1.0, 2.0)), (True, (1.0, math.pi / 2))):
        for length in lengths:
            r, _, _ = hmc_cost(a.N, traj_length=length, fourier=fourier, n_chains=64, n_therm=300,
                               n_traj=a.hmc_traj, threads=a.threads, seed=7, m2=a.m2)
            r["chi"], r["binder"] = list(r["chi"]), list(r["binder"])
            rows.append(r)
            log(f"N = {a.N} {r['sampler']} length {length:.3g}: tau {r['tau_chi']:.1f} +- "
                f"{r['dtau_chi']:.1f}, acceptance {r['acceptance']:.2f}, "
                f"core-s / indep. {r['cost_chi']:.3g}")
    print(json.dumps({"config": vars(a), "torch": torch.__version__, "lam": LAM, "rows": rows},
                     indent=1))


def table(paths) -> None:
    rows = [json.load(open(p)) for p in paths]
    rows.sort(key=lambda r: r["config"]["N"])
    print("| N | HMC leapfrog: tau_int(M^2), core-s / indep. config | HMC Fourier-acc.: tau_int, "
          "core-s / indep. | diffusion: density, NFE, core-s / proposal | ESS/n (Pareto k) | "
          "MH acceptance, tau_int | diffusion core-s / indep. (IS; MH) | corrected z (chi, U) "
          "rw; MH |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, f, d = r["hmc"], r["hmc_fa"], r["diffusion"]
        zz = d["z"]
        print(f"| {r['config']['N']} | {h['tau_chi']:.1f}, {h['cost_chi']:.3g} | "
              f"{f['tau_chi']:.1f}, {f['cost_chi']:.3g} | "
              f"{'exact' if d['exact_density'] else 'ODE (approx.)'}, {d['nfe_per_proposal']}, "
              f"{d['core_s_per_proposal']:.3g} | {d['ess_fraction']:.2g} ({d.get('pareto_k', math.nan):.2f}) | "
              f"{d['mh_acceptance']:.2f}, {d['mh_tau_chi']:.1f} | "
              f"{d['cost_is']:.3g}; {d['cost_mh']:.3g} | "
              f"{zz['reweighted']['chi']:+.1f}, {zz['reweighted']['binder']:+.1f}; "
              f"{zz['mh']['chi']:+.1f}, {zz['mh']['binder']:+.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--m2", type=float, default=-1.0)
    ap.add_argument("--hmc-traj", type=int, default=2000)
    ap.add_argument("--keep", type=int, default=50)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--integrator", default="exponential",
                    choices=("heun", "exponential", "implicit"))
    ap.add_argument("--likelihood", default=None, choices=("discrete", "trace"),
                    help="default: discrete for V <= 1024, else trace")
    ap.add_argument("--proposals", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", nargs="+", metavar="JSON")
    ap.add_argument("--hmc-scan", action="store_true",
                    help="only HMC: trajectory lengths 1 and 2 (leapfrog), 1 and pi/2 (Fourier)")
    a = ap.parse_args()
    if a.table:
        table(a.table)
        return
    if a.hmc_scan:
        hmc_scan(a)
        return
    if a.likelihood is None:
        a.likelihood = "discrete" if a.N ** 2 <= 1024 else "trace"
    if a.likelihood == "trace" and a.integrator != "heun":
        a.integrator = "heun"  # the continuous density is integrated along a Heun path
    torch.set_num_threads(a.threads)
    lat, action = Lattice(a.N), Phi4Action(a.m2, LAM)
    out = {"config": vars(a), "torch": torch.__version__, "lam": LAM}
    common = dict(traj_length=1.0, n_chains=64, n_therm=300, n_traj=a.hmc_traj,
                  threads=a.threads, m2=a.m2)
    log(f"N = {a.N}: HMC leapfrog")
    h, ref, kept = hmc_cost(a.N, fourier=False, seed=1, keep_every=a.keep, **common)
    log(f"N = {a.N}: HMC Fourier-accelerated")
    f, _, _ = hmc_cost(a.N, fourier=True, seed=2, **common)
    for r in (h, f):
        r["chi"], r["binder"] = list(r["chi"]), list(r["binder"])
    out["hmc"], out["hmc_fa"] = h, f
    log(f"N = {a.N}: diffusion ({a.proposals} proposals, {a.likelihood} density)")
    out["diffusion"] = diffusion(a, lat, action, torch.cat(kept), ref)
    print(json.dumps(out, indent=1))
    d = out["diffusion"]
    log(f"HMC tau {h['tau_chi']:.1f} cost {h['cost_chi']:.3g} | FA tau {f['tau_chi']:.1f} cost "
        f"{f['cost_chi']:.3g} | diffusion {d['core_s_per_proposal']:.3g} core-s/proposal, "
        f"ESS/n {d['ess_fraction']:.3g}, MH acc {d['mh_acceptance']:.2f}, cost IS "
        f"{d['cost_is']:.3g} MH {d['cost_mh']:.3g} | z {d['z']}")


if __name__ == "__main__":
    main()
