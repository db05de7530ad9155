"""The README's 20x20 numbers from the RG-flow run directories, as JSON:

    python docs/flow_tables.py RUN_DIR... > benchmarks/results/rg_flow_20x20.json

per scheme and point: final estimates (HMC, diffusion, flow baseline reweighted), the max over
the t grid of |learned - exact|/sigma, the baseline's ESS/n, Pareto k and, at tau = 1
(unweighted), |baseline - HMC|/sigma (the baseline's entries only where the run has it), and
the campaign's seed."""
import json
import math
import sys

import numpy as np

from rgdist.io.results import read_results
from rgdist.campaign.aggregate.text import fmt

def f(v):
    return fmt(float(v[0]), float(v[1]))

out = {}
for rd in sys.argv[1:]:
    res = read_results(f"{rd}/results.h5")
    sch = json.loads(res["attrs"]["campaign"])["scheme"]["name"]
    for pid, p in sorted(res["points"].items(), key=lambda kv: kv[1]["attrs"]["m2"]):
        a, m2 = p["arrays"], p["attrs"]["m2"]
        has_bl = "baseline/ess_fraction" in a
        row = {"hmc": {}, "diffusion": {}, **({"baseline": {}} if has_bl else {})}
        for src in ("hmc", "diffusion"):
            for o in ("chi", "binder", "xi2", "abs_m", "lambda_R"):
                row[src][o] = f(a[f"estimates/{src}/{o}"])
        dev = {o: float(np.nanmax(np.abs(a[f"flow/deviation/{o}"]))) for o in ("m_R", "Z", "lambda_R", "chi", "binder")}
        entry = {"seed": json.loads(res["attrs"]["campaign"])["seed"], "estimates": row,
                 "max_dev_learned_vs_exact": dev,
                 "mean_max_abs": {"hmc": float(a["estimates/hmc/mean_max_abs"][0])}}
        if has_bl:
            for o in ("chi", "binder", "xi2", "abs_m", "lambda_R"):
                row["baseline"][o] = f(a[f"baseline/reweight/{o}"])
            # baseline at tau = 1 (unweighted draws of the model) vs HMC, |delta|/sigma
            bt = {}
            for o in ("m_R", "Z", "lambda_R", "chi", "binder"):
                b = a[f"baseline/flow/{o}"][:, -1]; h = a[f"estimates/hmc/{o}"]
                bt[o] = float(abs(b[0] - h[0]) / math.hypot(b[1], h[1]))
            entry.update({"baseline_ess_fraction": float(a["baseline/ess_fraction"]),
                          "baseline_pareto_k": float(a["baseline/pareto_k"]),
                          "baseline_tau1_dev_vs_hmc": bt})
            entry["mean_max_abs"]["baseline_tau1"] = float(a["baseline/flow/mean_max_abs"][0, -1])
        out.setdefault(sch, {})[f"{m2:g}"] = entry
print(json.dumps(out, indent=1))
