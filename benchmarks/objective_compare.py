"""The paper's comparison of training objectives (issue 12 item 2; arXiv 2308.12355 sec. 5):
the same model, the same number of gradient steps, trained by reverse KL only vs the
path-aware objective, and the learned RG flow of each against the exact (forward) flow.

One campaign per objective (``rgdist run`` in a subprocess; the campaigns differ only in
``train.objective``): N = 16, lam = 1, m2 = -0.9, the Polchinski scheme of the 20x20
campaigns (T = 2, Lambda0 = 4, m0^2 = 1, mu^2 = 3), model ``trace`` without the
Gaussian-exact wrapper (so reverse KL learns from the action alone; the path objective adds
DSM on the HMC data), kl_steps split steps on the snr grid, then

* the learned flow (the reverse sampler recorded at measure.record_times) against the
  forward flow of the HMC data: max over t of |learned - forward| / sigma per observable
  (the campaign's flow/deviation), and
* the exact correction of the trained flow (reweighting, exact trace density): ESS/n,
  Pareto k and the reweighted chi, U against HMC.

    OMP_NUM_THREADS=1 python benchmarks/objective_compare.py [--steps 400] > \
        benchmarks/results/objective_compare.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OBSERVABLES = ("m_R", "Z", "lambda_R", "chi", "binder")


def campaign(objective: str, a) -> str:
    return f"""\
schema_version: 1
name: objective_{objective}
seed: 20261207
lattice: {{N: [{a.N}], d: 2}}
grid: {{m2: [{a.m2}], lam: [{a.lam}]}}
scheme: {{name: polchinski, T: 2.0, Lambda0: 4.0, m02: 1.0, mu2: 3.0, t_min: 0.001}}
model: {{name: trace, channels: 4, global_channels: 2, gaussian_exact: false, dtype: float64}}
train: {{objective: {objective}, steps: {a.steps}, batch_size: 64, lr: 3.0e-3, warmup: {min(20, a.steps // 2)},
        ema_decay: 0.99, kl_steps: {a.kl_steps}, kl_grid: snr, kl_integrator: split}}
sample: {{n_samples: {a.samples}, batch_size: 256, n_steps: 100, grid: snr}}
measure: {{n_bins: 32, record_times: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]}}
hmc: {{n_chains: 64, chains_per_block: 32, therm: 200, n_traj: 800, thin: 10}}
correct: {{method: reweight, likelihood: trace, integrator: split, n_proposals: {a.samples},
          batch_size: 256, n_steps: {a.kl_steps}}}
checkpoint: {{every_steps: 100, every_seconds: null, keep: 2}}
resources: {{threads: 1}}
output: {{dir: run}}
"""


def run_one(objective: str, a, workdir: Path) -> dict:
    from rgdist.io.results import read_results

    path = workdir / f"{objective}.yaml"
    path.write_text(campaign(objective, a))
    run_dir = workdir / objective
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rgdist", "run", str(path), "--run-dir", str(run_dir)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"objective": objective, "status": f"rgdist run exit {out.returncode}: "
                f"{out.stderr[-800:]}"}
    (point,) = read_results(run_dir / "results.h5")["points"].values()
    arr = point["arrays"]
    dev = {k: float(np.nanmax(np.abs(np.asarray(arr[f"flow/deviation/{k}"]))))
           for k in OBSERVABLES if f"flow/deviation/{k}" in arr}
    est = {k[len("correct/"):]: np.asarray(v).tolist() for k, v in arr.items()
           if k.startswith("correct/") and np.asarray(v).size <= 4}
    hmc = {k: np.asarray(v).tolist() for k, v in arr.items()
           if k.startswith("estimates/hmc/") and np.asarray(v).size <= 2}
    loss = np.asarray(arr.get("results/train/loss", []), dtype=float)
    along = {k: np.asarray(arr[f"flow/deviation/{k}"]).tolist() for k in OBSERVABLES
             if f"flow/deviation/{k}" in arr}
    return {"objective": objective, "status": "ok", "wall_s": wall,
            "max_abs_dev_over_sigma": dev, "deviation_along_t": along,
            "t": np.asarray(arr["flow/forward/t"]).tolist(), "correct": est, "hmc": hmc,
            "final_loss": float(loss[-1]) if loss.size else math.nan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--m2", type=float, default=-0.9)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--kl-steps", type=int, default=8)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--objectives", nargs="+", default=["reverse_kl", "path"])
    ap.add_argument("--keep", default=None, help="keep the run directories under this folder")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="objcmp_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [run_one(o, a, work) for o in a.objectives]
    print(json.dumps({"config": vars(a), "device": "cpu (AMD EPYC, 1 thread)", "rows": rows},
                     indent=1))
    for r in rows:
        if r["status"] != "ok":
            print(r["objective"], r["status"], file=sys.stderr)
            continue
        dev = " ".join(f"{k} {v:.2f}" for k, v in r["max_abs_dev_over_sigma"].items())
        print(f"{r['objective']:10s} max|dev|/sigma: {dev}; wall {r['wall_s']:.0f} s",
              file=sys.stderr)


if __name__ == "__main__":
    main()
