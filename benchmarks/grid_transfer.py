"""Size transfer of a coupling-conditioned score model: trained at N = 16, run at N = 32.

Every model family is fully convolutional, so the weights of a model trained on 16 x 16 run
on 32 x 32 as they are; only the Gaussian-exact wrapper's spectrum is size-specific, and it is
replaced by the interpolated spectrum measured at the new size (rgdist.models.conditioning
SpectrumTable). Setup (lam = 1, the couplings of tests/unit/test_grid_between.py's slow case):
the trace model, conditioned on (m2, lam), trained by DSM with the grid trainer on HMC data at
m2 = -1.0 and -0.6; evaluated at their midpoint m2 = -0.8 (a coupling it never saw) by
``--proposals`` draws of the split flow with the exact trace, reweighted to the target. Rows:

- ``N16``: the N = 16 model at N = 16 (the reference quality);
- ``N32_transfer``: the same weights at N = 32, before any training there;
- ``N32_finetune``: after ``--finetune-steps`` grid-trainer steps on N = 32 data;
- ``N32_scratch``: a fresh model trained ``--finetune-steps`` steps at N = 32 only (what the
  same budget buys without the N = 16 model).

Per row: ESS/n (Kish), Pareto k, reweighted chi and U with z-scores against HMC at the
midpoint, and the training core-s (1 thread). Writes benchmarks/results/grid_transfer.json.

    python benchmarks/grid_transfer.py [--steps 3000 --finetune-steps 300]
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
from rgdist.models import build_model, load_named_arrays, named_arrays
from rgdist.models.conditioning import CouplingWindow, SpectrumTable, condition_model, set_couplings
from rgdist.rg import build_scheme
from rgdist.train import EnsembleData, TrainConfig, measured_spectrum
from rgdist.train.grid import GridPointData, GridTrainer
from rgdist.train.objectives import kish_ess_fraction

from fa_data import fa_hmc  # benchmarks/fa_data.py

REPO = Path(__file__).resolve().parents[1]
LAM = 1.0
M2S = (-1.0, -0.6)
MID = -0.8


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hmc(lat, m2, seed, n_traj, chains):
    return fa_hmc(lat, m2, LAM, seed, n_traj, chains, therm=100)


class Size:
    """HMC data at the training couplings, the spectra table and the midpoint reference."""

    def __init__(self, N, a):
        self.lat = Lattice(N)
        runs = [hmc(self.lat, m, 11 + i + 100 * N, a.hmc_traj, a.chains) for i, m in enumerate(M2S)]
        self.data = [r[0] for r in runs]
        self.ref = hmc(self.lat, MID, 99 + N, a.ref_traj, a.chains)[1]
        self.G = [measured_spectrum(d, self.lat) for d in self.data]
        self.table = SpectrumTable([(m, LAM) for m in M2S], [g.numpy() for g in self.G])
        self.scheme = build_scheme("vp", self.lat)

    def model(self):
        m = build_model("trace", self.lat, scheme=self.scheme, data_spectrum=self.G[0],
                        gaussian_exact=True, channels=4, global_channels=2, generator=gen(2))
        return condition_model(m, CouplingWindow.of([(m2, LAM) for m2 in M2S]))

    def train(self, model, steps, seed):
        pts = [GridPointData(i, m, LAM, Phi4Action(m, LAM), EnsembleData(self.data[i]), self.G[i])
               for i, m in enumerate(M2S)]
        cfg = TrainConfig(steps=steps, batch_size=64, lr=3e-3, warmup=10, ema_decay=0.99,
                          log_every=0)
        trainer = GridTrainer(model, self.scheme, pts, cfg, n_points=2,
                              streams=lambda i, k: gen(7919 * i + k + seed))
        t0 = time.process_time()
        trainer.fit()
        return trainer.ema_model(), time.process_time() - t0

    def evaluate(self, model, n_prop):
        G = self.table.at(MID, LAM)
        set_couplings(model, MID, LAM, G)
        flow = FlowProposal(model, self.scheme, n_steps=16, grid="snr", prior_G=G, method="trace",
                            integrator="split", batch_size=256)
        t0 = time.process_time()
        phi, log_q = flow.sample(n_prop, gen(4))
        lw = log_weights(phi, log_q, Phi4Action(MID, LAM))
        rw = WeightedAccumulator(self.lat, 32).update(phi, lw, torch.arange(n_prop) % 32).estimate()
        z = {o: (rw[o][0] - self.ref[o][0]) / math.hypot(rw[o][1], self.ref[o][1])
             for o in ("chi", "binder")}
        return {"ess_fraction": float(kish_ess_fraction(lw)), "pareto_k": float(pareto_k(lw)),
                "chi": [float(x) for x in rw["chi"]], "binder": [float(x) for x in rw["binder"]],
                "hmc_chi": [float(x) for x in self.ref["chi"]],
                "hmc_binder": [float(x) for x in self.ref["binder"]],
                "z_chi": float(z["chi"]), "z_binder": float(z["binder"]),
                "sample_core_s": time.process_time() - t0}


def moved(arrays: dict, target) -> dict:
    """The trained arrays for a model of another size: every weight as it is, the size-specific
    buffers (the wrapper's spectrum) from the target, which set_couplings replaces anyway."""
    own = named_arrays(target)
    return {k: (v if v.shape == own[k].shape else own[k]) for k, v in arrays.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="training steps at N = 16")
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--proposals", type=int, default=4096)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--hmc-traj", type=int, default=600)
    ap.add_argument("--ref-traj", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "grid_transfer.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    small, big = Size(16, a), Size(32, a)
    rows = []
    m16, t16 = small.train(small.model(), a.steps, 5)
    rows.append({"name": "N16", "N": 16, "train_steps": a.steps, "train_core_s": t16,
                 **small.evaluate(m16, a.proposals)})
    trained = named_arrays(m16)
    m32 = big.model()
    load_named_arrays(m32, moved(trained, m32))
    rows.append({"name": "N32_transfer", "N": 32, "train_steps": 0, "train_core_s": 0.0,
                 **big.evaluate(m32, a.proposals)})
    m32 = big.model()
    load_named_arrays(m32, moved(trained, m32))
    tuned, tf = big.train(m32, a.finetune_steps, 6)
    rows.append({"name": "N32_finetune", "N": 32, "train_steps": a.finetune_steps,
                 "train_core_s": tf, **big.evaluate(tuned, a.proposals)})
    scratch, ts = big.train(big.model(), a.finetune_steps, 6)
    rows.append({"name": "N32_scratch", "N": 32, "train_steps": a.finetune_steps,
                 "train_core_s": ts, **big.evaluate(scratch, a.proposals)})
    out = {"benchmark": "grid_transfer", "lam": LAM, "train_m2": list(M2S), "m2": MID,
           "threads": a.threads, "proposals": a.proposals, "model": "trace (4 ch, 2 global), "
           "Gaussian-exact, conditioned; VP; split flow 16 snr steps, exact trace", "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(f"\n{'row':<14}{'train steps':>12}{'core-s':>9}{'ESS/n':>8}{'k':>7}{'z chi':>8}{'z U':>8}")
    for r in rows:
        print(f"{r['name']:<14}{r['train_steps']:>12}{r['train_core_s']:>9.1f}"
              f"{r['ess_fraction']:>8.3f}{r['pareto_k']:>7.2f}{r['z_chi']:>+8.2f}{r['z_binder']:>+8.2f}")


if __name__ == "__main__":
    main()
