"""Continuous curves of the aggregate: multi-histogram reweighting in m2 of the HMC series
(results ``points/<id>/series``, written with campaign ``measure.series: true``).

For every (d, lam) and hypercubic size N with series at >= 2 m2 points:
:func:`rgdist.analysis.reweight_curves.reweighted_curve` on a grid of ``n_grid`` targets
spanning the sampled m2 of that lam (each size inside its own sampled range), for U, chi and
xi2/N with jackknife errors that include the reweighting; targets the overlap does not support
are skipped and reported (never an error).  Consecutive sizes' U and xi2/N curves are crossed
(:func:`~rgdist.analysis.reweight_curves.curve_crossing`) and shown next to the crossings of the
grid points (rgdist.analysis.crossings: local polynomial fits through the grid points,
bootstrap errors).  Without series nothing here runs and the aggregate is as before.
"""
from __future__ import annotations

import math

import numpy as np

from rgdist.campaign.aggregate.collect import shape_of
from rgdist.errors import ConfigError

N_GRID = 121
CURVE_COLUMNS = ("d", "lam", "N", "m2", "ess", "binder", "binder_err", "chi", "chi_err",
                 "xi_over_N", "xi_over_N_err")
CURVE_CROSSING_COLUMNS = ("d", "lam", "source", "observable", "N_a", "N_b", "m2", "dm2", "value",
                          "dvalue", "reason", "grid_m2", "grid_dm2", "grid_value", "grid_dvalue")
METHOD = ("multi-histogram (Ferrenberg-Swendsen / MBAR) reweighting in m2 of the HMC series; "
          "stratified jackknife over chain bins with the free energies re-solved per replica")


def series_lines(points: dict) -> tuple[dict, list[str]]:
    """{(d, lam): {N: [Ensemble]}} of the hypercubic points with series; notes."""
    from rgdist.analysis.reweight_curves import Ensemble

    lines: dict = {}
    notes = []
    for pid, (_, p) in sorted(points.items()):
        s = p.get("series") or {}
        if not s:
            continue
        need = ("phi2_sum", "m", "g2_p1", "chain")
        shape = shape_of(p["attrs"])
        if any(k not in s for k in need):
            notes.append(f"point {pid}: series lacks {[k for k in need if k not in s]}; not reweighted")
            continue
        if len(set(shape)) != 1:
            notes.append(f"point {pid}: non-hypercubic lattice {shape}; not reweighted")
            continue
        key = (len(shape), round(float(p["attrs"]["lam"]), 12))
        ens = Ensemble(float(p["attrs"]["m2"]), np.asarray(s["phi2_sum"], dtype=np.float64),
                       np.asarray(s["m"], dtype=np.float64), np.asarray(s["g2_p1"], dtype=np.float64),
                       np.asarray(s["chain"]))
        lines.setdefault(key, {}).setdefault(shape[0], []).append(ens)
    return lines, notes


def parse_m2_range(text: str | None) -> tuple[float, float] | None:
    """``--m2-range LO:HI`` -> (LO, HI); ConfigError (exit 2) when malformed."""
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in str(text).split(":"))
    except ValueError:
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError("--m2-range", f"must look like LO:HI with numbers LO < HI, got {text!r}")
    return lo, hi


def _check_range(lam, N, curve, lo, hi) -> None:
    """An explicit range must lie inside N's sampled m2 and be supported everywhere."""
    sampled = (min(curve.m2), max(curve.m2)) if curve.m2 else None
    where = f"--m2-range {lo:g}:{hi:g} at lam={lam:g}, N={N}"
    if sampled is None or lo < sampled[0] - 1e-12 or hi > sampled[1] + 1e-12:
        raise ConfigError("--m2-range", f"{where} goes beyond the sampled m2 "
                                        f"{list(sampled) if sampled else []}: reweighting "
                                        "reaches only between sampled couplings")
    if curve.reason or curve.skipped:
        why = curve.reason or "; ".join(f"[{a:.6g}, {b:.6g}]: {r}" for a, b, r in curve.skipped)
        raise ConfigError("--m2-range", f"{where} is beyond the overlap the data support: {why}")


def curve_analysis(points: dict, *, n_grid: int = N_GRID,
                   m2_range: tuple[float, float] | None = None) -> tuple[list[dict], list[str]]:
    """Per (d, lam) with series: {"d", "lam", "grid", "curves": {N: ReweightedCurve},
    "crossings": [CurveCrossing]}; and notes. ``m2_range``: the targets' range (default: the
    sampled range, unsupported targets skipped); an explicit range must be supported at every
    target of every size (ConfigError naming what the data support otherwise)."""
    from rgdist.analysis.reweight_curves import curve_crossing, reweighted_curve

    lines, notes = series_lines(points)
    out = []
    for (d, lam), by_N in sorted(lines.items()):
        m2s = [e.m2 for ens in by_N.values() for e in ens]
        grid = np.linspace(*(m2_range or (min(m2s), max(m2s))), n_grid)
        curves = {}
        for N in sorted(by_N):
            c = reweighted_curve(by_N[N], (N,) * d, lam, grid)
            curves[N] = c
            if m2_range is not None:
                _check_range(lam, N, c, *m2_range)
            if c.reason:
                notes.append(f"lam={lam:g} N={N}: no reweighted curve ({c.reason})")
        sizes = [N for N in sorted(curves) if not curves[N].reason]
        crossings = [curve_crossing(curves[a], curves[b], obs)
                     for obs in ("binder", "xi_over_N") for a, b in zip(sizes[:-1], sizes[1:])]
        out.append({"d": d, "lam": lam, "grid": grid, "curves": curves, "crossings": crossings})
    return out, notes


def curve_rows(curves: list[dict]) -> list[dict]:
    """One row per (d, lam, N, target inside N's sampled range); nan where not supported."""
    rows = []
    for e in curves:
        for N, c in e["curves"].items():
            lo, hi = min(c.m2), max(c.m2)
            for t, m2 in enumerate(c.grid):
                if not lo - 1e-12 <= m2 <= hi + 1e-12:
                    continue
                row = {"d": e["d"], "lam": e["lam"], "N": N, "m2": float(m2), "ess": float(c.ess[t])}
                for obs in ("binder", "chi", "xi_over_N"):
                    row[obs], row[obs + "_err"] = float(c.value[obs][t]), float(c.error[obs][t])
                rows.append(row)
    return rows


def curve_crossing_rows(curves: list[dict], grid_crossings: list[dict]) -> list[dict]:
    """The crossings on the curves, each with the grid-point crossing of the same pair."""
    grid = {(r["d"], round(r["lam"], 12), r["observable"], r["N_a"], r["N_b"]): r
            for r in grid_crossings if r["source"] == "hmc"}
    rows = []
    for e in curves:
        for c in e["crossings"]:
            g = grid.get((e["d"], round(e["lam"], 12), c.observable, c.N_a, c.N_b), {})
            rows.append({"d": e["d"], "lam": e["lam"], "source": "hmc", "observable": c.observable,
                         "N_a": c.N_a, "N_b": c.N_b, "m2": c.m2, "dm2": c.dm2, "value": c.value,
                         "dvalue": c.dvalue, "reason": c.reason,
                         "grid_m2": g.get("m2", math.nan), "grid_dm2": g.get("dm2", math.nan),
                         "grid_value": g.get("value", math.nan), "grid_dvalue": g.get("dvalue", math.nan)})
    return rows


CURVE_CRITICAL_COLUMNS = ("d", "lam", "pair", "m2_c", "dm2", "dm2_stat", "dm2_sys", "binder",
                          "dbinder", "xi_over_N", "dxi_over_N", "m2_c_lo", "m2_c_ref", "z_ref",
                          "reason", "note")


def curve_critical_rows(curves: list[dict]) -> list[dict]:
    """The critical line from the curves: per (d, lam), m2_c = the Binder crossing of the
    largest pair of sizes on the continuous HMC curves; dm2 = its jackknife error (+) the drift
    from the previous pair's crossing (as rgdist.analysis.critical.critical_point's "largest");
    U* and xi2/N* are the two curves' values at their own crossing of that pair; d = 2 rows
    carry the anchors (leading-order continuum m2_c, lattice reference, pull)."""
    from rgdist.analysis.critical import ANCHOR_COLUMNS, anchors

    rows = []
    for e in curves:
        binder = [c for c in e["crossings"] if c.observable == "binder" and c.ok]
        xi = {(c.N_a, c.N_b): c for c in e["crossings"] if c.observable == "xi_over_N" and c.ok}
        row = {"d": e["d"], "lam": e["lam"], "note": ""}
        if not binder:
            why = "; ".join(f"{c.N_a}-{c.N_b}: {c.reason}" for c in e["crossings"]
                            if c.observable == "binder") or "fewer than 2 sizes with a curve"
            row.update({k: math.nan for k in CURVE_CRITICAL_COLUMNS if k not in row},
                       pair="", reason=f"no Binder crossing on the curves ({why})", note="")
            rows.append(row)
            continue
        last = binder[-1]
        sys = abs(last.m2 - binder[-2].m2) if len(binder) > 1 else math.nan
        if len(binder) == 1:
            row["note"] = "one pair only: no drift estimate"
        x = xi.get((last.N_a, last.N_b))
        row.update(pair=f"{last.N_a}-{last.N_b}", m2_c=last.m2, dm2_stat=last.dm2, dm2_sys=sys,
                   dm2=math.hypot(last.dm2, sys if math.isfinite(sys) else 0.0),
                   binder=last.value, dbinder=last.dvalue,
                   xi_over_N=x.value if x else math.nan, dxi_over_N=x.dvalue if x else math.nan,
                   reason="")
        row.update(anchors(e["lam"], row["m2_c"], row["dm2"]) if e["d"] == 2 else
                   {k: math.nan for k in ANCHOR_COLUMNS})
        rows.append(row)
    return rows


def _clean(x):
    """JSON-able: nan/inf -> None, numpy -> python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def curves_json(curves: list[dict], crossing_rows: list[dict]) -> dict:
    """The content of OUT_curves.json (nan written as null)."""
    lines = []
    for e in curves:
        for N, c in e["curves"].items():
            inside = (c.grid >= min(c.m2) - 1e-12) & (c.grid <= max(c.m2) + 1e-12) if c.m2 else c.grid < 0
            lines.append({
                "d": e["d"], "lam": e["lam"], "N": N, "source": "hmc", "ensembles_m2": c.m2,
                "groups_m2": [s.m2 for s in c.segments], "m2": c.grid[inside],
                "ess": c.ess[inside], "min_ess": [float(s.mh.min_ess) for s in c.segments],
                **{obs: {"value": c.value[obs][inside], "error": c.error[obs][inside]}
                   for obs in ("binder", "chi", "xi_over_N")},
                "skipped": [{"m2_lo": a, "m2_hi": b, "reason": r} for a, b, r in c.skipped],
                "reason": c.reason})
    return _clean({"method": METHOD, "observables": {"binder": "U = 1 - <M^4>/(3 <M^2>^2)",
                                                     "chi": "V <M^2>", "xi_over_N": "xi2 / N"},
                   "lines": lines, "crossings": crossing_rows,
                   "grid_crossings": "grid_*: the crossing of the grid points (local polynomial "
                                     "fits, bootstrap errors), as in OUT_crossings.csv"})
