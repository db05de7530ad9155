"""HMC throughput and autocorrelation benchmark (prints JSON to stdout, a table to stderr).

Throughput (lam = 1, m2 = -1.27, trajectory length 1 = 10 leapfrog steps of 0.1, batched chains):
    traj_per_s         batched trajectories per second (every chain advances one trajectory)
    chain_traj_per_s   = n_chains * traj_per_s
    site_updates_per_s = n_chains * V * traj_per_s            (one site moved by one trajectory)
    md_site_steps_per_s = n_chains * V * n_steps * traj_per_s  (site-force evaluations per second)

Autocorrelation near the critical point (lam = 1, m2 = -1.27, N = 16, 32): tau_int of M^2 in
trajectories from the Gamma method with automatic windowing (U. Wolff, Comput. Phys. Commun.
156 (2004) 143, S = 1.5), chains as replica, and the cost of one independent configuration
    cost_per_indep_s = wall_seconds * 2 tau_int / (n_traj * n_chains).

    OMP_NUM_THREADS=1 python benchmarks/hmc.py [--quick] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.hmc import HMC

M2_CRIT, LAM = -1.27, 1.0


def gamma_tau_int(series: np.ndarray, s_factor: float = 1.5) -> tuple[float, float, int]:
    """tau_int, its error and the window W of a (n_time,) or (n_time, n_chains) series.

    Gamma(t) = <(a_i - abar)(a_{i+t} - abar)> pooled over chains (abar the global mean),
    rho(t) = Gamma(t)/Gamma(0), tau(W) = 1/2 + sum_{t=1..W} rho(t); W is the first window
    with exp(-W/tau_W) - tau_W / sqrt(W N) < 0, tau_W = S / log((2 tau + 1)/(2 tau - 1));
    Gamma is bias-corrected by (1 + (2W + 1)/N), dtau = tau sqrt((4W + 2)/N).
    """
    a = np.asarray(series, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    n_time, n_chains = a.shape
    n_total = n_time * n_chains
    x = a - a.mean()
    size = 1 << (2 * n_time - 1).bit_length()
    f = np.fft.rfft(x, n=size, axis=0)
    acf = np.fft.irfft(f * f.conj(), n=size, axis=0)[:n_time].sum(1)
    gamma = acf / (n_chains * (n_time - np.arange(n_time)))
    if gamma[0] <= 0:
        return 0.5, 0.0, 0
    w_max = n_time // 2
    window = w_max
    for w in range(1, w_max):
        tau = 0.5 + (gamma[1:w + 1] / gamma[0]).sum()
        tau_w = s_factor / math.log((2 * tau + 1) / (2 * tau - 1)) if tau > 0.5 else 1e-12
        if math.exp(-w / tau_w) - tau_w / math.sqrt(w * n_total) < 0:
            window = w
            break
    g = gamma[: window + 1].copy()
    c_f = g[0] + 2 * g[1:].sum()
    g = g + c_f / n_total  # bias of the estimated mean
    tau = 0.5 + (g[1:] / g[0]).sum()
    return float(tau), float(tau * math.sqrt((4 * window + 2) / n_total)), int(window)


try:  # the measure layer's estimator, when it exists (same definitions as gamma_tau_int)
    from rgdist.measure.stats import tau_int as _tau_int
    TAU_ESTIMATOR = "rgdist.measure.stats.tau_int"
except ImportError:
    _tau_int, TAU_ESTIMATOR = gamma_tau_int, "benchmarks/hmc.py:gamma_tau_int"


def _hmc(n, n_chains, seed, device):
    lat = Lattice(n)
    g = torch.Generator(device=device).manual_seed(seed)
    return HMC(Phi4Action(M2_CRIT, LAM), lat, n_chains, step_size=0.1, n_steps=10,
               generator=g, device=device)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def throughput(n, n_chains, n_traj, device, seed=1) -> dict:
    hmc = _hmc(n, n_chains, seed, device)
    hmc.thermalize(3, adapt=False)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n_traj):
        hmc.trajectory()
    _sync(device)
    dt = time.perf_counter() - t0
    v = hmc.lattice.volume
    tps = n_traj / dt
    return {"N": n, "n_chains": n_chains, "n_traj": n_traj, "n_steps": hmc.n_steps,
            "seconds": dt, "traj_per_s": tps, "chain_traj_per_s": n_chains * tps,
            "site_updates_per_s": n_chains * v * tps,
            "md_site_steps_per_s": n_chains * v * hmc.n_steps * tps,
            "acceptance": hmc.stats()["acceptance"]}


def autocorrelation(n, n_chains, n_therm, n_traj, device, seed=2) -> dict:
    hmc = _hmc(n, n_chains, seed, device)
    hmc.thermalize(n_therm, adapt=False)
    m2 = np.empty((n_traj, n_chains))
    _sync(device)
    t0 = time.perf_counter()
    for k in range(n_traj):
        hmc.trajectory()
        m2[k] = (hmc.phi.mean(dim=hmc.lattice.dims) ** 2).cpu().numpy()
    _sync(device)
    dt = time.perf_counter() - t0
    tau, dtau, window = _tau_int(m2)
    chain_means = m2.mean(0)
    return {"N": n, "n_chains": n_chains, "n_therm": n_therm, "n_traj": n_traj,
            "acceptance": hmc.stats()["acceptance"], "seconds": dt,
            "tau_int_M2": tau, "dtau_int_M2": dtau, "window": window,
            "n_traj_over_tau": n_traj / tau,
            "chi": hmc.lattice.volume * float(chain_means.mean()),
            "dchi": hmc.lattice.volume * float(chain_means.std(ddof=1) / math.sqrt(n_chains)),
            "cost_per_indep_s": dt * 2 * tau / (n_traj * n_chains)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (minutes -> seconds)")
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--tau-sizes", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        n_bench, therm, n_tau = 10, {16: 200, 32: 300}, {16: 1000, 32: 1000}
    else:
        n_bench, therm, n_tau = 50, {16: 500, 32: 2000}, {16: 5000, 32: 8000}
    out = {"config": {"lam": LAM, "m2": M2_CRIT, "traj_length": 1.0, "n_steps": 10,
                      "integrator": "leapfrog", "n_chains": args.chains, "quick": args.quick,
                      "threads": args.threads, "device": args.device, "torch": torch.__version__,
                      "tau_estimator": TAU_ESTIMATOR},
           "throughput": [], "autocorrelation": []}
    print(f"{'N':>4} {'traj/s':>9} {'site-upd/s':>11} {'MD site-steps/s':>16} {'acc':>6}",
          file=sys.stderr)
    for n in args.sizes:
        r = throughput(n, args.chains, n_bench, args.device)
        out["throughput"].append(r)
        print(f"{n:>4} {r['traj_per_s']:9.2f} {r['site_updates_per_s']:11.3g} "
              f"{r['md_site_steps_per_s']:16.3g} {r['acceptance']:6.3f}", file=sys.stderr)
    print(f"{'N':>4} {'traj':>6} {'acc':>6} {'tau_int(M2)':>14} {'W':>4} {'chi':>14} "
          f"{'s/indep':>9}", file=sys.stderr)
    for n in args.tau_sizes:
        r = autocorrelation(n, args.chains, therm.get(n, 2000), n_tau.get(n, 8000), args.device)
        out["autocorrelation"].append(r)
        print(f"{n:>4} {r['n_traj']:>6} {r['acceptance']:6.3f} "
              f"{r['tau_int_M2']:7.1f}+-{r['dtau_int_M2']:<5.1f} {r['window']:>4} "
              f"{r['chi']:7.2f}+-{r['dchi']:<5.2f} {r['cost_per_indep_s']:9.2e}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
