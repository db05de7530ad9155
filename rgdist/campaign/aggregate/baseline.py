"""The flow baseline's table in `rgdist aggregate` and `rgdist plot` (campaign ``baseline:``;
rgdist.campaign.stages.baseline): one row per grid point whose results hold
``points/<id>/baseline``, with the reverse-KL steps, ESS/n and Pareto k of the importance
weights, and the reweighted (final, tau = 1) observables next to the point's HMC estimates,
with z = (baseline - HMC) / sqrt(sigma_baseline^2 + sigma_HMC^2).

Data only (no text, no files): rgdist.campaign.aggregate.text prints the rows, and
`rgdist aggregate` writes them to OUT_baseline.csv.
"""
from __future__ import annotations

import math

import numpy as np

from rgdist.campaign.aggregate.collect import shape_of

#: (name in baseline/reweight and estimates/hmc, label) of the table's observables
BASELINE_TABLE = (("chi", "chi"), ("binder", "U"), ("xi2", "xi2"), ("abs_m", "<|M|>"),
                  ("m_R", "m_R"), ("lambda_R", "lam_R"))
BASELINE_COLUMNS = (("point_id", "run_dir", "shape", "lam", "m2", "steps", "skipped", "n_samples",
                     "ess_fraction", "pareto_k")
                    + tuple(c for n, _ in BASELINE_TABLE
                            for c in (n, n + "_err", n + "_hmc", n + "_hmc_err", "z_" + n)))


def z_score(a, b) -> float:
    """(a - b) / sqrt(ea^2 + eb^2) for (value, err) pairs; nan when undefined."""
    s = math.hypot(float(a[1]), float(b[1]))
    return (float(a[0]) - float(b[0])) / s if s > 0 and math.isfinite(s) else math.nan


def _scalar(arrays: dict, name: str, default=math.nan) -> float:
    return float(np.asarray(arrays[name]).reshape(-1)[0]) if name in arrays else default


def baseline_rows(points: dict) -> list[dict]:
    """Rows (dicts with BASELINE_COLUMNS) of the points ({point_id: (run_dir, point)} as
    rgdist.campaign.aggregate.collect gives them, read with ``baseline=True``) that have
    baseline results, sorted by (d, shape, lam, m2)."""
    rows = []
    for pid, (run_dir, p) in points.items():
        b = p.get("baseline") or {}
        if "ess_fraction" not in b:
            continue
        a, hmc = p["attrs"], p["estimates"].get("hmc", {})
        shape = shape_of(a)
        row = {"point_id": pid, "run_dir": str(run_dir), "shape": "x".join(map(str, shape)),
               "lam": float(a["lam"]), "m2": float(a["m2"]),
               "steps": int(_scalar(b, "train/steps", -1)), "skipped": int(_scalar(b, "train/skipped", -1)),
               "n_samples": int(_scalar(b, "n_samples", -1)),
               "ess_fraction": _scalar(b, "ess_fraction"), "pareto_k": _scalar(b, "pareto_k")}
        for name, _ in BASELINE_TABLE:
            mine = tuple(np.asarray(b[f"reweight/{name}"], dtype=np.float64)[:2]) \
                if f"reweight/{name}" in b else (math.nan, math.nan)
            ref = hmc.get(name, (math.nan, math.nan))
            row.update({name: float(mine[0]), name + "_err": float(mine[1]),
                        name + "_hmc": float(ref[0]), name + "_hmc_err": float(ref[1]),
                        "z_" + name: z_score(mine, ref)})
        rows.append(((len(shape), shape, row["lam"], row["m2"], pid), row))
    return [r for _, r in sorted(rows, key=lambda x: x[0])]


def baseline_flow(arrays: dict, attrs: dict, hmc: dict):
    """(FlowResult or None, targets, reweighted, notes) for the figures of one point:
    the baseline's observables along tau (``arrays``: the point's ``baseline/`` datasets by
    relative name, ``flow/t``, ``flow/<observable>``, ``reweight/<observable>``), the HMC
    estimates as targets ({name: (value, err)}, m_R_L = m_R N added) and the reweighted
    tau = 1 values ({name: (value, err)})."""
    from rgdist.flow.base import FlowResult

    flow = {k[len("flow/"):]: v for k, v in arrays.items() if k.startswith("flow/")}
    if "t" not in flow:
        return None, {}, {}, []
    try:
        res = FlowResult.from_arrays(flow, kind="baseline")
    except ValueError as exc:
        return None, {}, {}, [f"baseline/flow skipped: {exc}"]
    shape = shape_of(attrs)
    targets = {k: (float(v[0]), float(v[1])) for k, v in hmc.items()}
    reweighted = {k[len("reweight/"):]: tuple(float(x) for x in np.asarray(v)[:2])
                  for k, v in arrays.items() if k.startswith("reweight/")}
    if len(set(shape)) == 1:  # m_R L of a hypercubic lattice
        for d in (targets, reweighted):
            if "m_R" in d:
                d["m_R_L"] = (d["m_R"][0] * shape[0], d["m_R"][1] * shape[0])
    return res, targets, reweighted, []
