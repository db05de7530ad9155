"""Discretization bias of the exact-divergence density (issue 12 item 4), for the flow baseline.

The sampler runs the discrete RK4 map F_n (n steps) and claims the density
log q~_n(phi) = log p0(phi0) - I_n(phi0), I_n the RK4 integral of div v. The map's true
density is log q_n = log p0(phi0) - log|det F_n'(phi0)|. Self-normalized reweighting with
the claimed density is exact iff r_n = I_n - log|det F_n'| is constant over the draws, so
the bias is bounded by the spread of r_n (a constant drops out of the normalization).

* V <= 256 (N = 16): r_n exactly, log|det F_n'| from the full V x V Jacobian of the map
  (V one-hot vector-Jacobian products, float64), on ``--jac-draws`` prior draws.
* Every N: step halving on the same prior draws, d_n = I_n - I_2n (the Richardson estimate of
  the error of I_n, x 16/15 for a 4th-order rule) and the shift of the reweighted chi and U
  between n and 2n steps in units of their statistical error. At N = 16 the exact std(r_n) is
  set beside std(d_n), which says how far the step-halving proxy can be trusted at larger N.

The CNF: the flow baseline of benchmarks/exact_scale.py (8 radius-1 channels, 4
magnetization channels), trained ``--train-steps`` reverse-KL steps at N = 16 (float32), then
run in float64 at every N (the field is size-independent).

    OMP_NUM_THREADS=1 python benchmarks/density_bias.py > benchmarks/results/density_bias.json
"""
from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch

from exact_scale import baseline_cnf, train_baseline
from rgdist.correct import WeightedAccumulator
from rgdist.density.divergence import batched_jacobian, slogdet
from rgdist.lattice import Lattice, Phi4Action
from rgdist.train.objectives import kish_ess_fraction
from vs_hmc import gen, log


def draws(cnf, n_draws, n_steps, action, batch=128):
    """(phi, I_n, log_w) of ``n_draws`` prior draws (fixed seed) through n_steps RK4 steps."""
    g, out = gen(11), []
    with torch.no_grad():
        for start in range(0, n_draws, batch):
            phi0 = cnf.sample_prior(min(batch, n_draws - start), g)
            phi, ell = cnf.integrate(phi0, n_steps=n_steps)
            lw = cnf.log_weights(phi, cnf.prior_log_prob(phi0) - ell, action)
            out.append((phi, ell, lw))
    return [torch.cat(x) for x in zip(*out)]


def exact_r(cnf, n_steps, n_draws):
    """r_n = I_n - log|det F_n'| on n_draws prior draws (full Jacobian)."""
    phi0 = cnf.sample_prior(n_draws, gen(11))
    rs = []
    for b in range(n_draws):
        x = phi0[b:b + 1]
        with torch.no_grad():
            _, ell = cnf.integrate(x, n_steps=n_steps)
        _, J = batched_jacobian(lambda z: cnf.integrate(z, n_steps=n_steps)[0], x, max_rows=256)
        sign, logabs = slogdet(J)
        assert float(sign[0]) > 0, "orientation-reversing map"
        rs.append(float(ell[0] - logabs[0]))
    return torch.tensor(rs, dtype=torch.float64)


def reweighted(lat, phi, lw):
    rw = WeightedAccumulator(lat, 32).update(phi, lw, torch.arange(len(lw)) % 32).estimate()
    return {k: list(rw[k]) for k in ("chi", "binder")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m2", type=float, default=-1.27)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--draws", type=int, nargs="+", default=[2048, 1024, 256],
                    help="draws per size (same order as --sizes)")
    ap.add_argument("--jac-draws", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    action = Phi4Action(a.m2, a.lam)
    cfg = SimpleNamespace(baseline_m0_sq=0.5, baseline_rk4=20, baseline_batch=64, threads=a.threads)
    log(f"training the baseline at N = 16, {a.train_steps} steps (float32)")
    trained, train_core_s, status = train_baseline(Lattice(16), action, a.train_steps, cfg, fast=True)
    rows = []
    for N, n_draws in zip(a.sizes, a.draws):
        lat = Lattice(N)
        cnf = baseline_cnf(lat, cfg)
        cnf.load_state_dict(trained.state_dict())
        for n in a.steps:
            t0 = time.perf_counter()
            phi, I_n, lw = draws(cnf, n_draws, n, action)
            phi2, I_2n, lw2 = draws(cnf, n_draws, 2 * n, action)
            d = I_n - I_2n
            r1, r2 = reweighted(lat, phi, lw), reweighted(lat, phi2, lw2)
            row = {"N": N, "n_steps": n, "draws": n_draws, "ess_fraction": kish_ess_fraction(lw),
                   "ess_fraction_2n": kish_ess_fraction(lw2),
                   "halving_d_mean": float(d.mean()), "halving_d_std": float(d.std()),
                   "halving_d_max_abs": float(d.abs().max()),
                   "log_w_std": float(lw.std()), "reweighted_n": r1, "reweighted_2n": r2,
                   "shift_over_sigma": {k: (r1[k][0] - r2[k][0]) / r1[k][1] for k in r1},
                   "seconds": time.perf_counter() - t0}
            if lat.volume <= 256:
                r = exact_r(cnf, n, a.jac_draws)
                row.update({"exact_r_mean": float(r.mean()), "exact_r_std": float(r.std()),
                            "exact_r_max_abs_dev": float((r - r.mean()).abs().max()),
                            "jac_draws": a.jac_draws})
            rows.append(row)
            log(f"N = {N}, n = {n}: ESS/n {row['ess_fraction']:.3g} (2n: "
                f"{row['ess_fraction_2n']:.3g}); d_n = I_n - I_2n: std {row['halving_d_std']:.2e} "
                f"max {row['halving_d_max_abs']:.2e}; std log w {row['log_w_std']:.2f}; shift/sigma "
                + ", ".join(f"{k} {v:+.2f}" for k, v in row["shift_over_sigma"].items())
                + (f"; exact r_n std {row['exact_r_std']:.2e}" if "exact_r_std" in row else ""))
    print(json.dumps({"config": vars(a), "torch": torch.__version__, "train_core_s": train_core_s,
                      "train_status": status, "device": f"cpu (AMD EPYC, {a.threads} thread)",
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
