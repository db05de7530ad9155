"""Exact learned sampling at scale: the trace model trained by the path objective, corrected
by reweighting, against the best-tuned Fourier-accelerated HMC in the same run (JSON rows).

Rows (``--rows``, default all): the peer anchors of Gerdes et al. (their action maps to ours
with the same m2, lam: L = 32, m2 = -4, lam = 4.572; L = 64, lam = 4.398) and criticality
(lam = 1, m2 = -1.27, N = 16, 32, 64). Per row, on ``--threads`` threads:

1. HMC, Fourier-accelerated, trajectory length pi/2 (the best of the trajectory-length scan of
   benchmarks/sizes.py --hmc-scan): reference chi, U (jackknife over chains) and core-seconds
   per effectively independent configuration, core_s * 2 tau_int(M^2) / n_configurations;
   every ``--keep``-th state is the training data.
2. Model ``trace`` inside the Gaussian-exact wrapper (measured spectrum), trained by the path
   objective (reverse KL through the split-integrator flow with the exact divergence + DSM)
   for ``--train-steps`` steps (train_core_s). Then ``--proposals`` draws of the same flow
   (``--kl-steps`` split steps on the snr grid; NFE = 4 channel evaluations per step), log q
   by the exact trace: ESS/n (Kish), Pareto k, reweighted chi and U, their z-scores against
   HMC, cost per independent configuration = core-s per proposal / (ESS/n) + training
   amortized over 1e5 configurations, and the ratio to the HMC cost.

    python benchmarks/exact_scale.py > benchmarks/results/exact_scale_run.json
writes benchmarks/results/exact_scale.json (the rows) as well.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from rgdist.correct import FlowProposal, WeightedAccumulator, log_weights, pareto_k
from rgdist.flow.baseline import BaselineCNF, BaselineTrainConfig, BaselineTrainer
from rgdist.lattice import Lattice, Phi4Action
from rgdist.models import build_model
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum
from rgdist.train.objectives import kish_ess_fraction
from vs_hmc import AMORTIZE, gen, hmc_cost, log

ROWS = {  # name: (N, m2, lam, train steps, proposals)
    "critical_N16": (16, -1.27, 1.0, 300, 2048),
    "critical_N32": (32, -1.27, 1.0, 150, 1024),
    "gerdes_L32": (32, -4.0, 4.572, 150, 1024),
    "critical_N64": (64, -1.27, 1.0, 60, 256),
    "gerdes_L64": (64, -4.0, 4.398, 60, 256),
}
# the flow baseline (rgdist.flow.baseline, reverse KL from the action alone, no HMC data):
# name: (N, m2, lam, train steps, proposals)
BASELINE_ROWS = {
    "baseline_critical_N16": (16, -1.27, 1.0, 700, 2048),
    "baseline_critical_N32": (32, -1.27, 1.0, 300, 1024),
    "baseline_gerdes_L32": (32, -4.0, 4.572, 200, 1024),
    # trained at N = 16 (--pretrain-steps), then fine-tuned at N = 32 for the row's steps
    "baseline_critical_N32_from16": (32, -1.27, 1.0, 150, 1024),
    # grown: --grow-pretrain steps at N = 16, then the row's steps at N, both trained in float32
    # without per-step recomputation (2.2x faster per step, measured), sampled in float64
    "baseline_critical_N32_grow": (32, -1.27, 1.0, 200, 4096),
    "baseline_gerdes_L32_grow": (32, -4.0, 4.572, 200, 4096),
    "baseline_critical_N64_grow": (64, -1.27, 1.0, 40, 1024),
}


def z(a, b) -> float:
    return (a[0] - b[0]) / math.hypot(a[1], b[1])


def baseline_cnf(lat, a, dtype="float64"):
    return BaselineCNF(lat, m0_sq=a.baseline_m0_sq, n_steps=a.baseline_rk4, channels=8,
                       radius=1, global_channels=4, init_seed=1, dtype=dtype)


def train_baseline(lat, action, steps, a, init=None, lr=2e-3, warmup=20, fast=False):
    """The flow baseline trained by reverse KL: (cnf, train_core_s, status). ``init``: a
    trained CNF (any lattice size: the field is size-independent) to start from. ``fast``:
    float32 parameters and no per-step recomputation in the backward pass."""
    cnf = baseline_cnf(lat, a, "float32" if fast else "float64")
    if init is not None:
        cnf.load_state_dict(init.state_dict())
    cfg = BaselineTrainConfig(steps=steps, batch_size=a.baseline_batch, lr=lr, warmup=warmup,
                              checkpoint=not fast)
    trainer = BaselineTrainer(cnf, action, cfg, generator=gen(3))
    t0 = time.perf_counter()
    trainer.fit(callback=lambda i, info: i % 50 == 0 and log(
        f"  step {i}: loss {info['loss']:.4f} batch ESS/n {info['ess']:.3f}"))
    status = "ok" if trainer.skipped == 0 else f"{trainer.skipped} steps skipped (not finite)"
    return cnf, (time.perf_counter() - t0) * a.threads, status


def sample_baseline(cnf, n_prop, action, batch=256):
    """n_prop draws of the baseline and their log-weights (log q by the exact divergence)."""
    g, phis, lws = gen(4), [], []
    with torch.no_grad():
        for start in range(0, n_prop, batch):
            phi, lq = cnf.sample(min(batch, n_prop - start), g)
            phis.append(phi)
            lws.append(cnf.log_weights(phi, lq, action))
    return torch.cat(phis), torch.cat(lws)


def row(name, a) -> dict:
    N, m2, lam, steps, n_prop = ROWS[name] if name in ROWS else BASELINE_ROWS[name]
    steps = a.train_steps or steps
    n_prop = a.proposals or n_prop
    lat, action = Lattice(N), Phi4Action(m2, lam)
    log(f"{name}: FA-HMC")
    h, ref, kept = hmc_cost(N, traj_length=math.pi / 2, fourier=True, n_chains=a.chains,
                            n_therm=a.therm, n_traj=a.hmc_traj, threads=a.threads, seed=7,
                            keep_every=a.keep, m2=m2, lam=lam, fa_mass2=0.1)
    if name in BASELINE_ROWS:
        *parts, extra = baseline_parts(lat, action, steps, n_prop, a, name)
        return {**finish_row(name, a, lat, action, h, ref, steps, n_prop, *parts), **extra}
    data = torch.cat(kept)
    G = measured_spectrum(data, lat)
    scheme = build_scheme("vp", lat)
    model = build_model("trace", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=4, global_channels=2, generator=gen(2))
    cfg = TrainConfig(steps=steps, batch_size=a.batch, lr=3e-3, warmup=10, ema_decay=0.99,
                      objective="path", kl_steps=a.kl_steps, kl_grid="snr",
                      weighting="likelihood", log_every=0)
    trainer = Trainer(model, scheme, EnsembleData(data), cfg, gen(3), action=action, prior_G=G)
    log(f"{name}: path-objective training, {steps} steps")
    t0 = time.perf_counter()
    status = "ok"
    try:
        trainer.fit()
    except FloatingPointError as exc:  # reported, not hidden
        status = f"training failed: {exc}"
    train_core_s = (time.perf_counter() - t0) * a.threads
    flow = FlowProposal(trainer.ema_model(), scheme, n_steps=a.kl_steps, grid="snr", prior_G=G,
                        method="trace", integrator="split", batch_size=256)
    log(f"{name}: {n_prop} proposals")
    t0 = time.perf_counter()
    phi, log_q = flow.sample(n_prop, gen(4))
    prop_core_s = (time.perf_counter() - t0) * a.threads / n_prop
    lw = log_weights(phi, log_q, action)
    return finish_row(name, a, lat, action, h, ref, steps, n_prop, phi, lw, prop_core_s,
                      train_core_s, status, 4 * a.kl_steps, "trace + path objective")


_PRETRAINED: dict = {}  # (m2, lam, steps, fast) -> (N = 16 CNF, its training core-s)


def baseline_parts(lat, action, steps, n_prop, a, name=""):
    init, pre_s, extra = None, 0.0, {}
    grow = name.endswith("_grow")
    if name.endswith("_from16") or grow:
        small, pre_steps = Lattice(16), a.grow_pretrain if grow else a.pretrain_steps
        log(f"baseline: reverse-KL training at N = 16, {pre_steps} steps")
        key = (action.m2, action.lam, pre_steps, grow)
        if key not in _PRETRAINED:  # rows at the same couplings share the N = 16 training
            _PRETRAINED[key] = train_baseline(small, action, pre_steps, a, fast=grow)[:2]
        init, pre_s = _PRETRAINED[key]
        phi, lw = sample_baseline_at(init, small, n_prop, action, a)
        extra["pretrain_N16_ess"] = kish_ess_fraction(lw)
        phi, lw = sample_baseline_at(init, lat, n_prop, action, a)
        extra.update({"transfer_ess_before_finetune": kish_ess_fraction(lw),
                      "pretrain_N16_core_s": pre_s, "pretrain_N16_steps": pre_steps,
                      "train_dtype": "float32" if grow else "float64"})
        log(f"baseline: N = 16 model: ESS/n {extra['pretrain_N16_ess']:.3g} at N = 16, "
            f"{extra['transfer_ess_before_finetune']:.3g} at N = {lat.shape[0]} before "
            "fine-tuning")
    log(f"baseline: reverse-KL training, {steps} steps")
    cnf, train_core_s, status = train_baseline(lat, action, steps, a, init=init,
                                               lr=2e-3 if init is None else 5e-4, fast=grow)
    train_core_s += pre_s
    log(f"baseline: {n_prop} proposals")
    t0 = time.perf_counter()
    phi, lw = sample_baseline_at(cnf, lat, n_prop, action, a)  # float64 map and density
    prop_core_s = (time.perf_counter() - t0) * a.threads / n_prop
    model = "flow baseline (CNF)" + (" trained at N = 16, fine-tuned" if init is not None else "")
    if grow:
        model += " (float32 training, float64 sampling)"
    return phi, lw, prop_core_s, train_core_s, status, 4 * cnf.n_steps, model, extra


def sample_baseline_at(cnf, lat, n_prop, action, a):
    """Draws of a trained CNF carried over to lattice ``lat`` (same parameters, float64)."""
    moved = baseline_cnf(lat, a)
    moved.load_state_dict(cnf.state_dict())
    return sample_baseline(moved, n_prop, action)


def finish_row(name, a, lat, action, h, ref, steps, n_prop, phi, lw, prop_core_s,
               train_core_s, status, nfe, model) -> dict:
    N, m2, lam = lat.shape[0], action.m2, action.lam
    ess = kish_ess_fraction(lw)
    rw = WeightedAccumulator(lat, 32).update(phi, lw, torch.arange(n_prop) % 32).estimate()
    cost = prop_core_s / max(ess, 1e-12) + train_core_s / AMORTIZE
    out = {"name": name, "N": N, "m2": m2, "lam": lam, "ess_fraction": ess,
           "pareto_k": pareto_k(lw), "nfe": nfe, "model": model, "z_chi": z(rw["chi"], ref["chi"]),
           "z_binder": z(rw["binder"], ref["binder"]), "cost_per_indep_s": cost,
           "best_hmc_cost_per_indep_s": h["cost_chi"], "cost_ratio_vs_best_hmc": cost / h["cost_chi"],
           "train_core_s": train_core_s, "train_steps": steps, "proposals": n_prop,
           "core_s_per_proposal": prop_core_s, "device": "cpu (AMD EPYC, 2 cores shared; "
           f"{a.threads} thread)", "status": status,
           "hmc": {k: (list(v) if isinstance(v, tuple) else v) for k, v in h.items()},
           "reweighted": {k: list(rw[k]) for k in ("chi", "binder", "abs_m")}}
    log(f"{name}: ESS/n {ess:.3g} k {out['pareto_k']:.2f} z_chi {out['z_chi']:+.2f} z_U "
        f"{out['z_binder']:+.2f} cost {cost:.3g} vs HMC {h['cost_chi']:.3g} "
        f"(ratio {out['cost_ratio_vs_best_hmc']:.3g}); train {train_core_s:.0f} core-s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", default=list(ROWS),
                    choices=list(ROWS) + list(BASELINE_ROWS))
    ap.add_argument("--baseline-rk4", type=int, default=20, help="RK4 steps of the baseline")
    ap.add_argument("--baseline-batch", type=int, default=64)
    ap.add_argument("--baseline-m0-sq", type=float, default=0.5)
    ap.add_argument("--pretrain-steps", type=int, default=700,
                    help="N = 16 steps of the *_from16 rows")
    ap.add_argument("--grow-pretrain", type=int, default=1500,
                    help="N = 16 steps (float32) of the *_grow rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chains", type=int, default=32)
    ap.add_argument("--therm", type=int, default=200)
    ap.add_argument("--hmc-traj", type=int, default=600)
    ap.add_argument("--keep", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--kl-steps", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=0, help="0: the row's default")
    ap.add_argument("--proposals", type=int, default=0, help="0: the row's default")
    ap.add_argument("--out", default="benchmarks/results/exact_scale.json")
    ap.add_argument("--keep-rows", action="store_true",
                    help="keep the rows of --out that are not run now")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    if Path(a.out).exists() and a.keep_rows:  # replace only the rows run now
        rows = [r for r in json.loads(Path(a.out).read_text()) if r["name"] not in a.rows]
    for name in a.rows:
        rows.append(row(name, a))
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")  # kept after every row
    print(json.dumps({"config": vars(a), "torch": torch.__version__, "rows": rows}, indent=1))
    log(f"{'name':14s} {'ESS/n':>7s} {'k':>5s} {'z_chi':>6s} {'z_U':>6s} {'cost':>9s} "
        f"{'HMC':>9s} {'ratio':>8s}")
    for r in rows:
        log(f"{r['name']:14s} {r['ess_fraction']:7.3g} {r['pareto_k']:5.2f} {r['z_chi']:+6.2f} "
            f"{r['z_binder']:+6.2f} {r['cost_per_indep_s']:9.3g} "
            f"{r['best_hmc_cost_per_indep_s']:9.3g} {r['cost_ratio_vs_best_hmc']:8.3g}")


if __name__ == "__main__":
    main()
