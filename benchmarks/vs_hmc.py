"""Learned sampler with exact Metropolis-Hastings correction vs HMC (JSON to stdout, tables to
stderr).

Cost measure: core-seconds (wall seconds x threads) per effectively independent
configuration, for chi (series M^2) and the Binder cumulant U (series M^2 and M^4; the
larger tau_int of the two):

    cost = core_seconds * 2 tau_int / (number of configurations),   tau_int by the Gamma method
                                                                   (chains as replica).

1. HMC at lam = 1, m2 = -1.27 (near the critical point at N = 16): plain leapfrog with two
   trajectory lengths, and Fourier acceleration (M(p) = phat^2 + fa_mass2) with two lengths;
   the step size is adapted to 90% acceptance at fixed length during thermalization.
2. The diffusion sampler with exact independence MH: a GaussianExact ConvScore trained by
   DSM on HMC configurations (training core-seconds reported separately and amortized over
   1e5 configurations), probability-flow Heun proposals with the EXACT density of the discrete
   map (method "discrete", V <= 256). Reported: core-seconds per proposal, MH acceptance,
   tau_int of the MH chain, importance-sampling ESS/n of the same proposals, and the costs
   cost_mh = (s/proposal) 2 tau_int and cost_is = (s/proposal) / (ESS/n), each plus the
   amortized training. On lattices with V > 256 (--full: N = 32, 64) the exact density is not
   available; the flow with a Hutchinson log q (n_probes = 1) is timed there and labelled
   approximate (MH with a noisy log q is not exact).
3. Accuracy vs cost: |observable error| against score evaluations (NFE) per configuration for
   every solver (euler_maruyama, exponential, pc, heun_ode) and every scheme (carosso,
   polchinski, renormalized_polchinski, vp, ve) with the EXACT score of the free theory
   (m2 = 0.05, N = 16; exact chi = 1/m2, xi2 = 1/sqrt(m2)), so that the errors are those of
   the discretization alone (plus the reported statistical error), on an 'snr' grid. The
   spectrum bias mean_p(G2_est(p)/G(p) - 1) is the most precise single number. For the trained
   model, the same curve for the carosso scheme against HMC (|z| = |error| / combined sigma).

    OMP_NUM_THREADS=1 python benchmarks/vs_hmc.py [--quick | --full] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import numpy as np
import torch

from rgdist.correct import FlowProposal, IndependenceMH, ess_fraction
from rgdist.lattice import HMC, Lattice, Phi4Action
from rgdist.measure import ObservableAccumulator
from rgdist.measure.stats import tau_int
from rgdist.models import build_model
from rgdist.rg import SCHEMES, build_scheme
from rgdist.sample import SOLVERS, sample_ensemble
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum

LAM, M2_CRIT, M2_FREE = 1.0, -1.27, 0.05
AMORTIZE = 1e5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def taus(series: dict[str, np.ndarray]) -> dict:
    out = {}
    for key in ("m2", "m4"):
        with np.errstate(all="ignore"):
            tau, dtau, w = tau_int(series[key])
        out[key] = (tau, dtau, w)
    return out


# --------------------------------------------------------------------------- HMC
def hmc_cost(n: int, *, traj_length: float, fourier: bool, n_chains: int, n_therm: int,
             n_traj: int, threads: int, seed: int, keep_every: int = 0, m2: float = M2_CRIT,
             lam: float = LAM, fa_mass2: float = 0.1):
    lat = Lattice(n)
    action = Phi4Action(m2, lam)
    step = 0.1 if not fourier else 0.25
    n_steps = max(1, round(traj_length / step))
    kw = dict(fourier_accel=True, fa_mass2=fa_mass2) if fourier else {}
    hmc = HMC(action, lat, n_chains, step_size=traj_length / n_steps, n_steps=n_steps,
              generator=gen(seed), **kw)
    hmc.thermalize(n_therm)
    m2 = np.empty((n_traj, n_chains))
    acc = ObservableAccumulator(lat, min(32, n_chains))
    bins = torch.arange(n_chains) % min(32, n_chains)
    kept = []
    wall = 0.0
    for k in range(n_traj):
        t0 = time.perf_counter()
        hmc.trajectory()
        wall += time.perf_counter() - t0
        m = hmc.phi.flatten(1).mean(1)
        m2[k] = (m * m).numpy()
        acc.update(hmc.phi, bins)
        if keep_every and k % keep_every == 0:
            kept.append(hmc.phi.clone())
    core_s = wall * threads  # trajectories only (measurements excluded)
    t = taus({"m2": m2, "m4": m2 * m2})
    n_cfg = n_traj * n_chains
    est = acc.estimate()
    res = {"N": n, "sampler": "hmc" + ("_fa" if fourier else ""), "traj_length": traj_length,
           "step_size": hmc.step_size, "n_steps": hmc.n_steps,
           "acceptance": hmc.stats()["acceptance"], "n_chains": n_chains, "n_traj": n_traj,
           "core_s": core_s, "tau_chi": t["m2"][0], "dtau_chi": t["m2"][1],
           "tau_U": max(t["m2"][0], t["m4"][0]),
           "cost_chi": core_s * 2 * t["m2"][0] / n_cfg,
           "cost_U": core_s * 2 * max(t["m2"][0], t["m4"][0]) / n_cfg,
           "chi": est["chi"], "binder": est["binder"]}
    return res, est, kept


# --------------------------------------------------------------------------- training
def train_model(lat, scheme, configs, *, steps: int, channels: int, blocks: int, threads: int):
    G = measured_spectrum(configs, lat)
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=channels, blocks=blocks)
    cfg = TrainConfig(steps=steps, batch_size=64, lr=2e-3, warmup=min(50, steps // 10),
                      log_every=0, t_sampler="log")
    trainer = Trainer(model, scheme, EnsembleData(configs), cfg, gen(11))
    t0 = time.perf_counter()
    trainer.fit()
    core_s = (time.perf_counter() - t0) * threads
    return trainer.ema_model(), G, {"steps": steps, "channels": channels, "blocks": blocks,
                                    "core_s": core_s, "final_loss": trainer.loss_history[-1]}


class RecordingProposal:
    """Wraps a proposal and keeps log w = -S - log q of every proposal it hands out."""

    def __init__(self, inner, action):
        self.inner, self.action, self.log_w = inner, action, []

    def sample(self, n, generator):
        phi, log_q = self.inner.sample(n, generator)
        self.log_w.append((-self.action(phi) - log_q).detach())
        return phi, log_q

    def log_prob(self, phi):
        return self.inner.log_prob(phi)


def flow_mh_cost(lat, model, scheme, G, ref, train_info, *, n_steps: int, n_chains: int,
                 mh_steps: int, threads: int, seed: int):
    action = Phi4Action(M2_CRIT, LAM)
    exact = lat.volume <= 256
    method = "discrete" if exact else "hutchinson"
    prop = FlowProposal(model, scheme, n_steps=n_steps, method=method, grid="log", prior_G=G,
                        probe_generator=gen(seed + 7))
    rec = RecordingProposal(prop, action)
    with torch.no_grad():
        t0 = time.perf_counter()
        chain = IndependenceMH(rec, action, lat, n_chains, generator=gen(seed))
        res = chain.run(mh_steps, n_bins=min(16, n_chains))
        core_s = (time.perf_counter() - t0) * threads
    n_prop = chain.n_proposals
    s_prop = core_s / n_prop
    log_w = torch.cat(rec.log_w)
    ess = ess_fraction(log_w)
    t = res.tau_int
    tau_chi, tau_u = t["m2"][0], max(t["m2"][0], t["m4"][0])
    amort = train_info["core_s"] / AMORTIZE
    out = {"N": lat.shape[0], "sampler": f"flow_mh_{method}", "exact": exact,
           "n_steps": n_steps, "nfe_per_proposal": prop.nfe, "vjp_per_proposal": prop.vjp,
           "n_proposals": n_prop, "core_s_per_proposal": s_prop, "mh_acceptance": res.acceptance,
           "tau_chi": tau_chi, "dtau_chi": t["m2"][1], "tau_U": tau_u,
           "chain_length_over_tau": mh_steps / max(tau_u, 0.5), "ess_fraction": ess,
           "cost_chi": s_prop * 2 * tau_chi + amort, "cost_U": s_prop * 2 * tau_u + amort,
           "cost_is": s_prop / ess + amort, "training_amortized": amort,
           "chi": res.estimates["chi"], "binder": res.estimates["binder"]}
    if ref is not None:
        out["z_chi"] = _z(res.estimates["chi"], ref["chi"])
        out["z_U"] = _z(res.estimates["binder"], ref["binder"])
    return out


def _z(a, b) -> float:
    den = math.hypot(a[1], b[1])
    return float((a[0] - b[0]) / den) if den > 0 else float("nan")


# --------------------------------------------------------------------------- accuracy curves
def free_curve(n: int, step_counts, n_samples: int, threads: int) -> list:
    lat = Lattice(n)
    G = lat.free_propagator(M2_FREE)
    V = lat.volume
    # exact free-theory magnetizations for the frozen zero mode of the Polchinski schemes
    zero_pool = torch.randn(8192, generator=gen(99), dtype=torch.float64) \
        * math.sqrt(float(G[0, 0]) / V)
    rows = []
    for name in SCHEMES:
        scheme = build_scheme(name, lat)
        score = (lambda sch: (lambda phi, t: sch.gaussian_score(phi, t, G)))(scheme)
        for solver in SOLVERS:
            for n_steps in step_counts:
                t0 = time.perf_counter()
                res = sample_ensemble(score, scheme, n_samples, n_steps=n_steps, solver=solver,
                                      grid="snr", batch_size=n_samples, prior_G=G,
                                      zero_mode_pool=zero_pool, seed_streams=(5, name, solver))
                core_s = (time.perf_counter() - t0) * threads
                x = res.samples
                ok = bool(torch.isfinite(x).all())
                row = {"scheme": name, "solver": solver, "n_steps": n_steps, "nfe": res.nfe,
                       "core_s_per_config": core_s / n_samples, "finite": ok}
                if ok:
                    est = ObservableAccumulator(lat, 32).update(
                        x, torch.arange(n_samples) % 32).estimate()
                    g2 = lat.fft(x).abs().square() / V / G
                    bias = g2.mean(0) - 1
                    row.update({
                        "chi_rel_err": est["chi"][0] * M2_FREE - 1,
                        "chi_rel_sigma": est["chi"][1] * M2_FREE,
                        "xi2_rel_err": est["xi2"][0] * math.sqrt(M2_FREE) - 1,
                        "xi2_rel_sigma": est["xi2"][1] * math.sqrt(M2_FREE),
                        "spectrum_bias": float(bias.mean()),
                        "spectrum_bias_sigma": float(g2.mean((1, 2)).std() / math.sqrt(n_samples)),
                    })
                rows.append(row)
                _print_curve_row(row)
    return rows


def _print_curve_row(r: dict) -> None:
    if not r["finite"]:
        log(f"{r['scheme']:>24} {r['solver']:>15} {r['n_steps']:>5} {r['nfe']:>5}   non-finite")
        return
    log(f"{r['scheme']:>24} {r['solver']:>15} {r['n_steps']:>5} {r['nfe']:>5} "
        f"{100 * r['chi_rel_err']:+7.2f}+-{100 * r['chi_rel_sigma']:.2f}% "
        f"{100 * r['xi2_rel_err']:+7.2f}+-{100 * r['xi2_rel_sigma']:.2f}% "
        f"{100 * r['spectrum_bias']:+7.3f}+-{100 * r['spectrum_bias_sigma']:.3f}%")


def trained_curve(lat, model, scheme, G, ref, step_counts, n_samples: int, threads: int) -> list:
    rows = []
    for solver in SOLVERS:
        for n_steps in step_counts:
            t0 = time.perf_counter()
            with torch.no_grad():
                res = sample_ensemble(model, scheme, n_samples, n_steps=n_steps, solver=solver,
                                      grid="log", batch_size=n_samples, prior_G=G,
                                      seed_streams=(6, solver))
            core_s = (time.perf_counter() - t0) * threads
            est = ObservableAccumulator(lat, 32).update(
                res.samples, torch.arange(n_samples) % 32).estimate()
            row = {"scheme": scheme.name, "solver": solver, "n_steps": n_steps, "nfe": res.nfe,
                   "core_s_per_config": core_s / n_samples,
                   "chi": est["chi"], "binder": est["binder"],
                   "chi_abs_err": abs(est["chi"][0] - ref["chi"][0]),
                   "U_abs_err": abs(est["binder"][0] - ref["binder"][0]),
                   "z_chi": _z(est["chi"], ref["chi"]), "z_U": _z(est["binder"], ref["binder"])}
            rows.append(row)
            log(f"{solver:>15} {n_steps:>5} {res.nfe:>5} chi {est['chi'][0]:7.3f}"
                f"({row['z_chi']:+5.1f}s) U {est['binder'][0]:6.3f}({row['z_U']:+5.1f}s) "
                f"{row['core_s_per_config'] * 1e3:7.2f} ms/cfg")
    return rows


# --------------------------------------------------------------------------- main
def _print_cost(r: dict) -> None:
    if r["sampler"].startswith("hmc"):
        log(f"{r['N']:>4} {r['sampler']:>22} len {r['traj_length']:<5.2f} "
            f"acc {r['acceptance']:5.3f} "
            f"tau_chi {r['tau_chi']:7.2f} tau_U {r['tau_U']:7.2f} "
            f"cost_chi {r['cost_chi']:9.2e} cost_U {r['cost_U']:9.2e} core-s")
    else:
        log(f"{r['N']:>4} {r['sampler']:>22} {r['n_steps']:>3} st acc {r['mh_acceptance']:5.3f} "
            f"tau_chi {r['tau_chi']:7.2f} tau_U {r['tau_U']:7.2f} ESS/n {r['ess_fraction']:.3f} "
            f"cost_chi {r['cost_chi']:9.2e} cost_U {r['cost_U']:9.2e} cost_IS {r['cost_is']:9.2e} "
            f"({r['core_s_per_proposal']:.3g} core-s/proposal)")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="minutes: small counts everywhere")
    mode.add_argument("--full", action="store_true", help="also N = 32, 64; longer runs")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # short MH chains: tau_int is then flagged by chain_length_over_tau instead
    warnings.filterwarnings("ignore", message="tau_int: no window")
    q = args.quick
    sizes = [16, 32, 64] if args.full else [16]
    P = {"hmc_chains": 32 if q else 64, "hmc_therm": 200 if q else 500,
         "hmc_traj": 600 if q else 3000, "train_steps": 300 if q else 3000,
         "channels": 8 if q else 16, "blocks": 1 if q else 2,
         "mh_chains": 8 if q else 64, "mh_steps": 4 if q else 40, "flow_steps": 6 if q else 16,
         "curve_samples": 1024 if q else 4096, "curve_steps": [8, 32] if q else [8, 32, 128],
         "trained_samples": 512 if q else 2048, "trained_steps": [10, 40] if q else [10, 40, 160]}
    out = {"config": {**P, "lam": LAM, "m2": M2_CRIT, "m2_free": M2_FREE, "quick": q,
                      "full": args.full, "threads": args.threads, "amortize_over": AMORTIZE,
                      "torch": torch.__version__},
           "hmc": [], "flow": [], "training": [], "accuracy_free": [], "accuracy_trained": []}
    for n in sizes:
        log(f"--- N = {n}: HMC (lam = {LAM}, m2 = {M2_CRIT})")
        ref, data = None, None
        for fourier, lengths in ((False, (1.0, 2.0)), (True, (1.0, math.pi / 2))):
            for length in lengths:
                keep = 0 if data is not None else max(1, P["hmc_traj"] // 40)
                r, est, kept = hmc_cost(n, traj_length=length, fourier=fourier,
                                        n_chains=P["hmc_chains"], n_therm=P["hmc_therm"],
                                        n_traj=P["hmc_traj"], threads=args.threads, seed=n,
                                        keep_every=keep)
                if data is None:
                    ref, data = est, torch.cat(kept)
                out["hmc"].append(r)
                _print_cost(r)
        lat = Lattice(n)
        scheme = build_scheme("carosso", lat)
        log(f"--- N = {n}: training on {data.shape[0]} HMC configurations")
        model, G, tinfo = train_model(lat, scheme, data, steps=P["train_steps"],
                                      channels=P["channels"], blocks=P["blocks"],
                                      threads=args.threads)
        tinfo["N"] = n
        out["training"].append(tinfo)
        log(f"training: {tinfo['steps']} steps, {tinfo['core_s']:.1f} core-s, "
            f"loss {tinfo['final_loss']:.4f}")
        log(f"--- N = {n}: flow + independence MH")
        r = flow_mh_cost(lat, model, scheme, G, ref, tinfo, n_steps=P["flow_steps"],
                         n_chains=P["mh_chains"], mh_steps=P["mh_steps"], threads=args.threads,
                         seed=n + 1)
        out["flow"].append(r)
        _print_cost(r)
        if n == 16:
            log("--- accuracy vs cost, trained model (carosso) vs HMC")
            out["accuracy_trained"] = trained_curve(lat, model, scheme, G, ref, P["trained_steps"],
                                                    P["trained_samples"], args.threads)
    log(f"--- accuracy vs cost, free theory (exact score, N = 16, m2 = {M2_FREE}): "
        "chi, xi2 and spectrum relative errors")
    out["accuracy_free"] = free_curve(16, P["curve_steps"], P["curve_samples"], args.threads)
    print(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
