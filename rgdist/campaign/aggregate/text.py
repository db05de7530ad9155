"""Report text of `rgdist aggregate` and `rgdist plot` (plain text, no computation):
the point table, the crossings and peaks, the critical line, the flow baseline's table (when
the results hold one); :func:`fmt` writes value(error).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rgdist.campaign.aggregate.analyse import NOT_ENOUGH_SIZES, PEAK_OBSERVABLE
from rgdist.campaign.aggregate.baseline import BASELINE_TABLE


def fmt(v: float, e: float) -> str:
    """``v`` with its error ``e`` in parentheses on the last two digits: 0.6107(42)."""
    if not math.isfinite(v):
        return "nan"
    if not math.isfinite(e) or e <= 0:
        return f"{v:.4g}"
    digits = max(0, -int(math.floor(math.log10(e))) + 1)
    return f"{v:.{digits}f}({round(e * 10**digits):d})" if digits <= 8 else f"{v:.3g}"


def _fmt(v, e) -> str:
    return fmt(float(v), float(e))


def table_text(header: Sequence[str], body: list[Sequence]) -> str:
    """Right-aligned columns under a header and a dashed rule."""
    rows = [tuple(header)] + [tuple(str(c) for c in r) for r in body]
    w = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(x) for c, x in zip(r, w)) for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def points_text(rows: list[dict]) -> str:
    obs = (("binder", "U"), ("xi2", "xi2"), ("chi", "chi"), ("chi_conn", "chi_conn"),
           ("abs_m", "<|M|>"), ("m_R", "m_R"), ("lambda_R", "lam_R"), ("Z", "Z"))
    body = [(r["point_id"][:8], r["shape"], f"{r['lam']:g}", f"{r['m2']:g}", r["source"],
             *(_fmt(r[o], r[o + "_err"]) for o, _ in obs)) for r in rows]
    return table_text(("point", "N", "lam", "m2", "source", *(lbl for _, lbl in obs)), body)


def analysis_text(analyses: list[dict]) -> str:
    multi_d = len({e["d"] for e in analyses}) > 1
    lines = []
    for e in analyses:
        head = (f"d={e['d']} " if multi_d else "") + f"lam={e['lam']:g} {e['source']}: "
        if len(e["sizes"]) < 2:
            lines.append(head + f"only N = {e['sizes'][0]}: {NOT_ENOUGH_SIZES}")
        else:
            lines.append(head + "sizes " + ", ".join(map(str, e["sizes"])))
        for obs, lbl in (("binder", "U"), ("xi_over_N", "xi2/N")):
            for pc in e[obs]:
                c = pc.crossing
                txt = (f"m2 = {_fmt(c.m2, c.dm2)}  {lbl} = {_fmt(c.U, c.dU)}" if c.ok
                       else f"no crossing: {c.reason}")
                lines.append(f"  {lbl + ' crossing':<17}{pc.N_a}-{pc.N_b}: {txt}")
        ps = e["peaks"]
        if ps is not None:
            for p in ps.peaks:
                txt = (f"m2 = {_fmt(p.m2, p.dm2)}  height = {_fmt(p.height, p.dheight)}" if p.ok
                       else f"no peak: {p.reason}")
                lines.append(f"  {PEAK_OBSERVABLE + ' peak':<17}N={p.N}: {txt}")
            if math.isfinite(ps.gamma_over_nu):
                info = ([f"chi2/dof = {ps.chi2:.3g}/{ps.dof}"] if ps.dof > 0 else []) + (
                    ["2D Ising 7/4"] if e["d"] == 2 else [])
                lines.append(f"  gamma/nu = {_fmt(ps.gamma_over_nu, ps.dgamma_over_nu)}"
                             + (f" ({'; '.join(info)})" if info else ""))
            elif len(e["sizes"]) >= 2:
                lines.append(f"  gamma/nu: {ps.reason}")
        for err in e["errors"]:
            lines.append(f"  analysis skipped: {err}")
    return "\n".join(lines)


def _anchor(r: dict) -> str:
    """'LO -1.2993 / lattice -1.2725 (z = +0.4)': the critical line's anchors at the row's
    lam (rgdist.analysis.critical), '-' where there are none."""
    lo, ref, z = (r.get(k, math.nan) for k in ("m2_c_lo", "m2_c_ref", "z_ref"))
    out = f"{lo:.4f}" if math.isfinite(lo) else "-"
    if math.isfinite(ref):
        out += f" / {ref:.4f}" + (f" (z = {z:+.1f})" if math.isfinite(z) else "")
    return out


def critical_text(crit: list[dict]) -> str:
    multi_d = len({r["d"] for r in crit}) > 1
    body = []
    for r in crit:
        ok = r["reason"] == "" and math.isfinite(r["m2_c"])
        note = r["reason"] or r["note"]
        body.append(((f"{r['d']}",) if multi_d else ()) + (
            f"{r['lam']:g}", r["source"], _fmt(r["m2_c"], r["dm2"]) if ok else "-",
            _fmt(r["value"], r["dvalue"]) if ok else "-", r["pairs"] or "-",
            _fmt(r["gamma_over_nu"], r["dgamma_over_nu"]) if math.isfinite(r["gamma_over_nu"]) else "-",
            _anchor(r), note))
    head = (("d",) if multi_d else ()) + ("lam", "source", "m2_c", "U*", "pairs", "gamma/nu",
                                          "anchors: LO continuum / lattice (z)", "note")
    return table_text(head, body)


def curves_text(curves: list[dict], crossing_rows: list[dict]) -> str:
    """The reweighted curves: per line its range, skipped ranges, and the crossings on the
    curves next to the grid points' crossings of the same pair."""
    multi_d = len({e["d"] for e in curves}) > 1
    lines = []
    for e in curves:
        head = (f"d={e['d']} " if multi_d else "") + f"lam={e['lam']:g} hmc:"
        lines.append(head)
        for N, c in e["curves"].items():
            ok = c.supported
            edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(int), [0]])))
            runs = [f"[{c.grid[a]:.6g}, {c.grid[b - 1]:.6g}]" for a, b in zip(edges[::2], edges[1::2])]
            span = (f"curve on m2 in {' and '.join(runs)} ({int(ok.sum())} targets)" if ok.any()
                    else "no curve")
            lines.append(f"  N={N}: ensembles at m2 = {', '.join(f'{m:g}' for m in c.m2)}; {span}")
            for lo, hi, why in c.skipped:
                lines.append(f"    skipped m2 in [{lo:.6g}, {hi:.6g}]: {why}")
            if c.reason and not c.skipped:
                lines.append(f"    {c.reason}")
        for r in crossing_rows:
            if r["d"] != e["d"] or r["lam"] != e["lam"]:
                continue
            lbl = "U" if r["observable"] == "binder" else "xi2/N"
            if r["reason"] == "":
                txt = f"m2 = {_fmt(r['m2'], r['dm2'])}  {lbl} = {_fmt(r['value'], r['dvalue'])}"
            else:
                txt = f"no crossing: {r['reason']}"
            grid = (f"m2 = {_fmt(r['grid_m2'], r['grid_dm2'])}" if math.isfinite(r["grid_m2"])
                    else "none")
            lines.append(f"  {lbl + ' crossing':<17}{r['N_a']}-{r['N_b']}: curves {txt};  grid points {grid}")
    return "\n".join(lines)


def curve_critical_text(rows: list[dict]) -> str:
    """The critical line from the continuous curves, against the anchors and the 2D Ising
    values U* = 0.6107, xi2/N* = 0.905 (rgdist.analysis.critical)."""
    multi_d = len({r["d"] for r in rows}) > 1
    body = []
    for r in rows:
        ok = r["reason"] == ""
        body.append(((f"{r['d']}",) if multi_d else ()) + (
            f"{r['lam']:g}", r["pair"] or "-", _fmt(r["m2_c"], r["dm2"]) if ok else "-",
            _fmt(r["binder"], r["dbinder"]) if ok else "-",
            _fmt(r["xi_over_N"], r["dxi_over_N"]) if ok and math.isfinite(r["xi_over_N"]) else "-",
            _anchor(r) if ok else "-", r["reason"] or r["note"]))
    head = (("d",) if multi_d else ()) + ("lam", "pair", "m2_c", "U* (0.6107)", "xi2/N* (0.905)",
                                          "anchors: LO continuum / lattice (z)", "note")
    return table_text(head, body)


BASELINE_TITLE = ("flow baseline (CNF of Gerdes et al., reverse KL from the action alone): ESS/n "
                  "and Pareto k of the importance weights, reweighted observables vs HMC, "
                  "z = (baseline - HMC)/sigma:")


def baseline_text(rows: list[dict]) -> str:
    """The flow baseline's rows (rgdist.campaign.aggregate.baseline.baseline_rows)."""
    head = ["point", "N", "lam", "m2", "steps", "ESS/n", "k"]
    for _, lbl in BASELINE_TABLE:
        head += [lbl, f"{lbl} HMC", "z"]
    body = []
    for r in rows:
        cells = [r["point_id"][:8], r["shape"], f"{r['lam']:g}", f"{r['m2']:g}", str(r["steps"]),
                 f"{r['ess_fraction']:.3g}", f"{r['pareto_k']:.2f}"]
        for name, _ in BASELINE_TABLE:
            z = r["z_" + name]
            cells += [_fmt(r[name], r[name + "_err"]), _fmt(r[name + "_hmc"], r[name + "_hmc_err"]),
                      f"{z:+.2f}" if math.isfinite(z) else "-"]
        body.append(cells)
    return table_text(head, body)


def format_report(result: dict) -> str:
    """The text `rgdist aggregate` prints: points, crossings and peaks, the critical line."""
    rows = result["rows"]
    n_points = len({r["point_id"] for r in rows})
    parts = [f"{n_points} grid points, {len(rows)} rows (point x source)", "", points_text(rows)]
    if result["analyses"]:
        parts += ["", "finite-size scaling (crossings of successive sizes, bootstrap errors):",
                  analysis_text(result["analyses"]), "",
                  "critical line m2_c(lam) (Binder crossing of the largest pair; error = "
                  "bootstrap (+) drift of the last two pairs):", critical_text(result["critical"])]
    if result.get("baseline"):
        parts += ["", BASELINE_TITLE, baseline_text(result["baseline"])]
    if result.get("curves"):
        parts += ["", "continuous curves U, chi, xi2/N (multi-histogram reweighting in m2 of the HMC "
                      "series, jackknife errors including the reweighting); crossings on the curves "
                      "vs the grid-point crossings above (local fits through the grid points, "
                      "bootstrap errors):", curves_text(result["curves"], result["curve_crossings"])]
        if result.get("curve_critical"):
            parts += ["", "critical line from the curves (Binder crossing of the largest pair; "
                          "error = jackknife (+) drift of the last two pairs):",
                      curve_critical_text(result["curve_critical"])]
    if result["notes"]:
        parts += ["", *(f"note: {n}" for n in result["notes"])]
    f = result["files"]
    parts += ["", "wrote " + ", ".join(str(f[k]) for k in ("csv", "h5", "crossings_csv", "peaks_csv",
                                                            "critical_csv", "curves_json",
                                                            "curve_crossings_csv") if k in f)]
    if "baseline_csv" in f:
        parts[-1] += f", {f['baseline_csv']}"
    if f["plots"]:
        parts.append(f"wrote {len(f['plots'])} figure files to {Path(f['plots'][0]).parent}")
    return "\n".join(parts)


def plot_text(result: dict) -> str:
    """The text `rgdist plot` prints: the analysis, the notes, the figures written."""
    lines = [analysis_text(result["analyses"])] if result["analyses"] else []
    if result.get("baseline"):
        lines += [BASELINE_TITLE, baseline_text(result["baseline"])]
    lines += [f"note: {n}" for n in result["notes"]]
    pngs = [p for p in result["files"] if Path(p).suffix == ".png"]
    lines.append(f"wrote {len(pngs)} figures (PNG + PDF) to {result['outdir']}")
    lines += [f"  {Path(p).stem}" for p in pngs]
    return "\n".join(lines)
