"""Analyse: finite-size scaling of the point table (rgdist.analysis), for each dimension d
(hypercubic lattices only), coupling lam and source: Binder and xi2/N crossings of successive
sizes (parametric bootstrap errors), the chi_conn peak per size and gamma/nu from
log chi_peak = (gamma/nu) log N + c (>= 2 sizes), and m2_c(lam) from the Binder crossing of
the largest pair (error = bootstrap (+) drift between the last two pairs).  With a single size
there is nothing to cross: the rows say so (not an error).
"""
from __future__ import annotations

import math

CROSSING_COLUMNS = ("d", "lam", "source", "observable", "N_a", "N_b", "m2", "dm2", "value",
                    "dvalue", "n_failed", "chi2_dof", "reason")
PEAK_COLUMNS = ("d", "lam", "source", "observable", "N", "m2", "dm2", "height", "dheight",
                "n_failed", "reason")
CRITICAL_EXTRA = ("d", "source", "sizes", "gamma_over_nu", "dgamma_over_nu", "gamma_reason",
                  "m2_c_lo", "m2_c_ref", "z_ref")
PEAK_OBSERVABLE = "chi_conn"
NOT_ENOUGH_SIZES = "not enough sizes for crossings"
_NAN = math.nan


def fss_tables(rows: list[dict]) -> tuple[dict, list[str]]:
    """{d: rgdist.analysis.Table} of the hypercubic rows; notes on what was left out."""
    from rgdist.analysis.table import OBSERVABLES, SOURCES, Table

    notes = []
    odd = sorted({r["shape"] for r in rows if r["N"] < 2})
    if odd:
        notes.append(f"non-hypercubic lattices {odd} are in the table but not in the finite-size analysis")
    other = sorted({r["source"] for r in rows if r["source"] not in SOURCES})
    if other:
        notes.append(f"sources {other} are in the table but not in the finite-size analysis")
    by_d: dict[int, list] = {}
    for r in rows:
        if r["N"] >= 2 and r["source"] in SOURCES:
            by_d.setdefault(r["d"], []).append(
                {"N": r["N"], "lam": r["lam"], "m2": r["m2"], "source": r["source"],
                 **{o: r[o] for o in OBSERVABLES}, **{o + "_err": r[o + "_err"] for o in OBSERVABLES}})
    return {d: Table.from_rows(rs) for d, rs in sorted(by_d.items())}, notes


def guard(fn, *args, **kwargs):
    """(result, "") or (None, reason) when the analysis rejects the data (ValueError)."""
    try:
        return fn(*args, **kwargs), ""
    except ValueError as exc:
        return None, str(exc)


def analyse(tables: dict, *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Per (d, lam, source): crossings, peaks, gamma/nu and the critical point."""
    from rgdist.analysis.critical import critical_point
    from rgdist.analysis.crossings import crossings
    from rgdist.analysis.peaks import susceptibility_peaks

    out = []
    for d, table in tables.items():
        for lam in table.lams():
            sub = table.select(lam=lam)
            for src in sub.sources():
                one = sub.select(source=src)
                sizes = [int(n) for n in one.sizes()]
                e = {"d": d, "lam": float(lam), "source": src, "sizes": sizes, "errors": []}
                kw = dict(source=src, n_boot=n_boot, seed=seed)
                for obs in ("binder", "xi_over_N"):
                    e[obs], err = guard(crossings, table, lam, obs, **kw)
                    e[obs] = e[obs] or []
                    if err:
                        e["errors"].append(f"{obs} crossings: {err}")
                e["peaks"], err = guard(susceptibility_peaks, table, lam, observable=PEAK_OBSERVABLE, **kw)
                if err:
                    e["errors"].append(f"{PEAK_OBSERVABLE} peaks: {err}")
                e["critical"], err = guard(critical_point, table, lam, **kw)
                if err:
                    e["errors"].append(f"critical point: {err}")
                out.append(e)
    return out


def crossing_rows(analyses: list[dict]) -> list[dict]:
    rows = []
    for e in analyses:
        for obs in ("binder", "xi_over_N"):
            for pc in e[obs]:
                c = pc.crossing
                rows.append({"d": e["d"], "lam": e["lam"], "source": e["source"], "observable": obs,
                             "N_a": pc.N_a, "N_b": pc.N_b, "m2": c.m2, "dm2": c.dm2, "value": c.U,
                             "dvalue": c.dU, "n_failed": c.n_failed, "chi2_dof": c.chi2_dof,
                             "reason": c.reason})
    return rows


def peak_rows(analyses: list[dict]) -> list[dict]:
    rows = []
    for e in analyses:
        for p in (e["peaks"].peaks if e["peaks"] is not None else ()):
            rows.append({"d": e["d"], "lam": e["lam"], "source": e["source"],
                         "observable": PEAK_OBSERVABLE, "N": p.N, "m2": p.m2, "dm2": p.dm2,
                         "height": p.height, "dheight": p.dheight, "n_failed": p.n_failed,
                         "reason": p.reason})
    return rows


def critical_columns() -> tuple[str, ...]:
    """The columns of :func:`critical_rows` (OUT_critical.csv, the ``critical`` table)."""
    from rgdist.analysis.critical import CRITICAL_COLUMNS

    return CRITICAL_EXTRA[:2] + CRITICAL_COLUMNS + CRITICAL_EXTRA[2:]


def critical_rows(analyses: list[dict]) -> list[dict]:
    """One row per (d, lam, source): m2_c and gamma/nu, and (d = 2) the anchors of the
    critical line (rgdist.analysis.critical.anchors: leading-order continuum value, lattice
    reference and pull)."""
    from rgdist.analysis.critical import ANCHOR_COLUMNS, CRITICAL_COLUMNS, anchors

    rows = []
    for e in analyses:
        cp, ps = e["critical"], e["peaks"]
        row = cp.as_row() if cp is not None else {c: _NAN for c in CRITICAL_COLUMNS}
        if cp is None:
            row.update(lam=e["lam"], observable="binder", method="largest", pairs="",
                       reason="; ".join(e["errors"]) or "analysis failed", note="")
        if len(e["sizes"]) < 2:
            row["reason"] = f"{NOT_ENOUGH_SIZES} (only N = {e['sizes'][0]})"
        row.update(d=e["d"], source=e["source"], sizes=" ".join(map(str, e["sizes"])),
                   gamma_over_nu=ps.gamma_over_nu if ps is not None else _NAN,
                   dgamma_over_nu=ps.dgamma_over_nu if ps is not None else _NAN,
                   gamma_reason=ps.reason if ps is not None else "analysis failed")
        row.update(anchors(e["lam"], row["m2_c"], row["dm2"]) if e["d"] == 2 else
                   {c: _NAN for c in ANCHOR_COLUMNS})
        rows.append(row)
    return rows
