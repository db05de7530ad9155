"""`rgdist aggregate RUN_DIR... [-o OUT]` and `rgdist plot RUN_DIR [-o OUT]`.

aggregate: read the results file of every run directory (serially), make one row per
(grid point, source) -- ``source`` is ``hmc`` or ``diffusion`` -- with the lattice (``d``,
``shape`` such as ``8x8``, ``N`` = the side of a hypercubic lattice, 0 otherwise), the
couplings (``lam``, ``m2``, ``kappa``, ``lam_h``), and for every observable its mean and error
(``obs``, ``obs_err``) from ``points/<id>/estimates/<source>/<name>``.  Observables:
chi, chi_conn, binder, xi2, abs_m, m_R, lambda_R, Z, ``M2`` = <M^2> and ``M4`` = <M^4> (renamed
from the results' m2/m4 so that ``m2`` stays the coupling).

Finite-size scaling (rgdist.analysis.fss), for each dimension d (hypercubic lattices only),
coupling lam and source: Binder and xi2/N crossings of successive sizes (parametric
bootstrap errors), the chi_conn peak per size and gamma/nu from log chi_peak =
(gamma/nu) log N + c (>= 2 sizes), and m2_c(lam) from the Binder crossing of the largest pair
(error = bootstrap (+) drift between the last two pairs).  With a single size there is
nothing to cross: the report says so (not an error).

Outputs, for the prefix OUT (default: the first RUN_DIR/aggregate; a ``.csv``/``.h5``
suffix is dropped, an existing directory gets ``aggregate`` inside):
OUT.csv (point table), OUT.h5 (tables ``points``, ``crossings``, ``peaks``, ``critical``; see
rgdist.io.aggregate_file), OUT_crossings.csv, OUT_peaks.csv, OUT_critical.csv and the
figures (PNG + PDF) in OUT_plots/: U vs m2 with the crossings, chi/N^{7/4} vs the scaling
variable (m2 - m2_c) N (vs m2 when no m2_c), xi2/N vs m2, and the phase diagram.

plot: the same phase figures for one run, plus per grid point the RG-flow figures when the
results hold flow data.  Flow layout read (absent: skipped with a note)::

    points/<id>/flow/<kind>/t, <observable> (2, K[, *shape]), snapshots    kind: exact |
                                                 learned | gaussian (FlowResult.to_arrays)
    points/<id>/flow/couplings/<kind>/t, <operator> (K,)                 kind: learned | gaussian
    points/<id>/flow/deviation/<observable> (K,)   (learned - exact)/sigma (else recomputed)

Bad input (missing directory, not a run directory, no results file yet, unreadable results,
the same grid point in two inputs with different results) raises ConfigError before anything
is written.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rgdist import exitcodes
from rgdist.errors import ConfigError, RgdistError

#: (name in the results file, column in the aggregate table)
RESULT_NAMES = (("chi", "chi"), ("chi_conn", "chi_conn"), ("binder", "binder"), ("xi2", "xi2"),
                ("abs_m", "abs_m"), ("m_R", "m_R"), ("lambda_R", "lambda_R"), ("Z", "Z"),
                ("m2", "M2"), ("m4", "M4"))
TABLE_OBSERVABLES = tuple(col for _, col in RESULT_NAMES)
KEY_COLUMNS = ("point_id", "source", "run_dir", "d", "shape", "N", "lam", "m2", "kappa", "lam_h")
POINT_COLUMNS = KEY_COLUMNS + tuple(c for o in TABLE_OBSERVABLES for c in (o, o + "_err"))
CROSSING_COLUMNS = ("d", "lam", "source", "observable", "N_a", "N_b", "m2", "dm2", "value",
                    "dvalue", "n_failed", "chi2_dof", "reason")
PEAK_COLUMNS = ("d", "lam", "source", "observable", "N", "m2", "dm2", "height", "dheight",
                "n_failed", "reason")
CRITICAL_EXTRA = ("d", "source", "sizes", "gamma_over_nu", "dgamma_over_nu", "gamma_reason")
PEAK_OBSERVABLE = "chi_conn"
NOT_ENOUGH_SIZES = "not enough sizes for crossings"
FLOW_KINDS = ("exact", "learned", "gaussian")
_SUFFIXES = (".csv", ".h5", ".hdf5")
_NAN = math.nan


# ----------------------------------------------------------------------------- inputs
def check_run_dir(run_dir) -> Path:
    """The results file of ``run_dir``; ConfigError if there is none (yet)."""
    from rgdist.campaign.runner import load_run_dir

    rd = Path(run_dir)
    if not rd.exists():
        raise ConfigError("run_dir", f"{rd} does not exist")
    campaign = load_run_dir(rd)  # not a directory / not a run directory -> ConfigError
    results = rd / campaign.output.results
    if not results.is_file():
        raise ConfigError("run_dir", f"{rd} has no {campaign.output.results} yet (the campaign "
                          f"has not completed; see `rgdist status {rd}`)")
    return results


def read_run(run_dir, *, flow: bool = False) -> dict:
    """The scalar estimates (and flow data) of a run directory's results file."""
    from rgdist.io.aggregate_file import read_point_estimates

    results = check_run_dir(run_dir)
    try:
        return read_point_estimates(results, flow=flow)
    except (OSError, KeyError, ValueError, RgdistError) as exc:
        raise ConfigError("run_dir", f"{results} is unreadable: {exc}") from None


def _shape(attrs: dict) -> tuple[int, ...]:
    return tuple(int(n) for n in np.atleast_1d(attrs["shape"]))


def _physics_key(attrs: dict) -> tuple:
    return (_shape(attrs), round(float(attrs["lam"]), 12), round(float(attrs["m2"]), 12))


def _same_estimates(a: dict, b: dict) -> bool:
    if sorted(a) != sorted(b) or any(sorted(a[s]) != sorted(b[s]) for s in a):
        return False
    return all(np.array_equal(np.asarray(a[s][n]), np.asarray(b[s][n]), equal_nan=True)
               for s in a for n in a[s])


def _label(attrs: dict) -> str:
    return f"N={'x'.join(map(str, _shape(attrs)))} lam={float(attrs['lam']):g} m2={float(attrs['m2']):g}"


def merge_runs(runs: Sequence[tuple[str, dict]]) -> tuple[dict, list[str]]:
    """{point_id: (run_dir, point)} over all runs; ConfigError on conflicting duplicates.

    The same point id in two inputs with identical estimates is counted once (a note); with
    different estimates, or the same (shape, lam, m2) under two different point ids
    (campaigns with different settings), the inputs conflict.
    """
    by_id: dict[str, tuple[str, dict]] = {}
    by_phys: dict[tuple, tuple[str, str]] = {}
    notes: list[str] = []
    for run_dir, data in runs:
        for pid, p in data["points"].items():
            if pid in by_id:
                other_dir, other = by_id[pid]
                if not _same_estimates(other["estimates"], p["estimates"]):
                    raise ConfigError("run_dirs", f"point {pid} ({_label(p['attrs'])}) is in {other_dir} "
                                      f"and {run_dir} with different results; aggregate only one of them")
                notes.append(f"point {pid} is in {other_dir} and {run_dir} with identical results: counted once")
                continue
            key = _physics_key(p["attrs"])
            if key in by_phys:
                opid, odir = by_phys[key]
                raise ConfigError("run_dirs", f"the grid point {_label(p['attrs'])} is in {odir} (point {opid}) "
                                  f"and {run_dir} (point {pid}) from campaigns with different settings; "
                                  "aggregate only one of them")
            by_id[pid] = (run_dir, p)
            by_phys[key] = (pid, run_dir)
    return by_id, notes


def point_rows(points: dict) -> list[dict]:
    """One row per (point, source), sorted by (d, shape, lam, m2, source)."""
    rows = []
    for pid, (run_dir, p) in points.items():
        a = p["attrs"]
        shape = _shape(a)
        base = {"point_id": pid, "run_dir": str(run_dir), "d": len(shape),
                "shape": "x".join(map(str, shape)),
                "N": shape[0] if len(set(shape)) == 1 else 0,
                "lam": float(a["lam"]), "m2": float(a["m2"]),
                "kappa": float(a.get("kappa", _NAN)), "lam_h": float(a.get("lam_h", _NAN))}
        for src, est in p["estimates"].items():
            row = dict(base, source=src)
            for name, col in RESULT_NAMES:
                row[col], row[col + "_err"] = est.get(name, (_NAN, _NAN))
            rows.append(row)
    rows.sort(key=lambda r: (r["d"], tuple(int(n) for n in r["shape"].split("x")), r["lam"], r["m2"],
                             r["source"]))
    return rows


def collect(run_dirs: Sequence, *, flow: bool = False) -> tuple[list[dict], dict, list[str]]:
    """(rows, {point_id: (run_dir, point)}, notes) of the run directories; every input is
    checked before anything is returned."""
    if not run_dirs:
        raise ConfigError("run_dirs", "give at least one run directory")
    seen, unique, notes = set(), [], []
    for rd in run_dirs:
        key = Path(rd).resolve()
        if key in seen:
            notes.append(f"{rd} given twice: read once")
            continue
        seen.add(key)
        unique.append(rd)
    runs = [(str(rd), read_run(rd, flow=flow)) for rd in unique]
    points, more = merge_runs(runs)
    notes += more
    for rd, data in runs:
        if not data["points"]:
            notes.append(f"{rd}: the results file holds no points")
    return point_rows(points), points, notes


# ----------------------------------------------------------------------------- analysis
def fss_tables(rows: list[dict]) -> tuple[dict, list[str]]:
    """{d: rgdist.analysis.Table} of the hypercubic rows; notes on what was left out."""
    from rgdist.analysis.fss import OBSERVABLES, SOURCES, Table

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


def _guard(fn, *args, **kwargs):
    """(result, "") or (None, reason) when the analysis rejects the data (ValueError)."""
    try:
        return fn(*args, **kwargs), ""
    except ValueError as exc:
        return None, str(exc)


def analyse(tables: dict, *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Per (d, lam, source): crossings, peaks, gamma/nu and the critical point."""
    from rgdist.analysis.fss import critical_point, crossings, susceptibility_peaks

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
                    e[obs], err = _guard(crossings, table, lam, obs, **kw)
                    e[obs] = e[obs] or []
                    if err:
                        e["errors"].append(f"{obs} crossings: {err}")
                e["peaks"], err = _guard(susceptibility_peaks, table, lam, observable=PEAK_OBSERVABLE, **kw)
                if err:
                    e["errors"].append(f"{PEAK_OBSERVABLE} peaks: {err}")
                e["critical"], err = _guard(critical_point, table, lam, **kw)
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


def critical_rows(analyses: list[dict]) -> list[dict]:
    from rgdist.analysis.fss import CRITICAL_COLUMNS

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
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- figures
def _base(name: str, e: dict, multi_d: bool) -> str:
    return f"{name}_lam{e['lam']:g}_{e['source']}" + (f"_d{e['d']}" if multi_d else "")


def phase_figures(tables: dict, analyses: list[dict], outdir: Path) -> list[Path]:
    """U and xi2/N vs m2 with crossings, chi/N^{gamma/nu} collapse, the phase diagram."""
    from rgdist.analysis.fss import GAMMA_OVER_NU_ISING, NU_ISING
    from rgdist.plot.phase import (plot_binder, plot_chi_collapse, plot_phase_diagram,
                                   plot_xi_over_N, save_figure)

    files: list[Path] = []
    multi_d = len(tables) > 1
    for e in analyses:
        table = tables[e["d"]]
        kw = dict(source=e["source"], reference=e["d"] == 2)
        files += save_figure(plot_binder(table, e["lam"], crossings=e["binder"], **kw),
                             outdir / _base("binder", e, multi_d))
        files += save_figure(plot_xi_over_N(table, e["lam"], crossings=e["xi_over_N"], **kw),
                             outdir / _base("xi_over_N", e, multi_d))
        if e["d"] == 2:  # the 2D Ising exponents (SPEC section 7)
            cp = e["critical"]
            m2_c = cp.m2_c if cp is not None and cp.ok else None
            fig = plot_chi_collapse(table, e["lam"], source=e["source"], m2_c=m2_c,
                                    nu=NU_ISING, gamma_over_nu=GAMMA_OVER_NU_ISING)
            files += save_figure(fig, outdir / _base("chi_collapse", e, multi_d))
    for d, table in tables.items():
        fig, ax = None, None
        for k, src in enumerate(table.sources()):
            pts = [e["critical"] for e in analyses
                   if e["d"] == d and e["source"] == src and e["critical"] is not None]
            if not any(p.ok for p in pts):
                continue
            fig = plot_phase_diagram(pts, ax, table=table.select(source=src) if ax is None else None,
                                     label=f"critical line ({src})")
            ax = fig.axes[0]
            line, caps, bars = ax.containers[-1].lines  # this source's errorbar: own colour
            color = f"C{3 + k}"
            for artist in (line, *bars):
                artist.set_color(color)
            for artist in (line, *caps):
                artist.set_markeredgecolor(color)
                artist.set_markerfacecolor(color)
        if fig is not None:
            ax.legend(fontsize="small", loc="best")
            files += save_figure(fig, outdir / ("phase_diagram" + (f"_d{d}" if multi_d else "")))
    return list(files)


def flow_data(arrays: dict) -> tuple[dict, dict, dict, list[str]]:
    """({kind: FlowResult}, {kind: couplings mapping}, {name: stored deviation}, notes) from a
    point's flow arrays."""
    from rgdist.flow.forward import FlowResult

    groups: dict[str, dict] = {}
    for name, arr in arrays.items():
        head, _, rest = name.partition("/")
        if rest:
            groups.setdefault(head, {})[rest] = arr
    results, couplings, notes = {}, {}, []
    for kind in FLOW_KINDS:
        if kind in groups:
            try:
                results[kind] = FlowResult.from_arrays(groups[kind], kind=kind)
            except ValueError as exc:
                notes.append(f"flow/{kind} skipped: {exc}")
    for name, arr in groups.get("couplings", {}).items():
        kind, _, op = name.partition("/")
        if kind in ("learned", "gaussian") and op:
            couplings.setdefault(kind, {})[op] = np.asarray(arr, dtype=np.float64)
    couplings = {k: v for k, v in couplings.items() if "t" in v}
    deviations = {k: np.asarray(v, dtype=np.float64) for k, v in groups.get("deviation", {}).items()}
    unknown = sorted(set(groups) - set(FLOW_KINDS) - {"couplings", "deviation"})
    if unknown:
        notes.append(f"flow groups {unknown} not plotted")
    return results, couplings, deviations, notes


def flow_figures(pid: str, attrs: dict, arrays: dict, outdir: Path) -> tuple[list[Path], list[str]]:
    """Exact vs learned (vs Gaussian) flow panels, deviations, G2, snapshots, couplings."""
    from rgdist.plot.flow import (plot_flow_deviations, plot_flow_panels, plot_flow_snapshots,
                                  plot_g2_flow, plot_running_couplings, save_figure)

    res, coup, stored_dev, notes = flow_data(arrays)
    notes = [f"point {pid}: {n}" for n in notes]
    files: list[Path] = []
    base = outdir / f"flow_{pid}"
    title = f"{pid}: {_label(attrs)}"
    if res:
        names = [n for n in ("m_R_L", "Z", "lambda_R") if all(n in r for r in res.values())]
        names = names or [n for n in ("m_R", "chi", "binder", "xi2") if all(n in r for r in res.values())]
        if names:
            files += save_figure(plot_flow_panels(res.get("exact"), res.get("learned"),
                                                  res.get("gaussian"), names, title=title),
                                 base.with_name(base.name + "_panels"))
        else:
            notes.append(f"point {pid}: the flows share no scalar observable; panels skipped")
        if "exact" in res and "learned" in res:
            from rgdist.flow.learned import compare_flows

            # the runner's stored (learned - exact)/sigma per t_k, else recomputed
            devs = {k: v for k, v in stored_dev.items() if v.shape == res["exact"].t.shape}
            err = ""
            if not devs:
                devs, err = _guard(compare_flows, res["exact"], res["learned"])
            if devs:
                files += save_figure(plot_flow_deviations(devs, res["exact"].t),
                                     base.with_name(base.name + "_deviations"))
            elif err:
                notes.append(f"point {pid}: no deviation plot ({err})")
        with_g2 = {k: r for k, r in res.items() if "g2" in r}
        if with_g2:
            from rgdist.lattice import Lattice

            fig, err = _guard(plot_g2_flow, Lattice(_shape(attrs)), with_g2.get("exact"),
                              with_g2.get("learned"), with_g2.get("gaussian"))
            if fig is not None:
                files += save_figure(fig, base.with_name(base.name + "_g2"))
            else:
                notes.append(f"point {pid}: no G2 plot ({err})")
        snaps = {k: r.snapshots for k, r in res.items() if r.snapshots is not None}
        if snaps and len(_shape(attrs)) == 2:
            fig = plot_flow_snapshots(snaps, {k: res[k].t for k in snaps})
            files += save_figure(fig, base.with_name(base.name + "_snapshots"))
    if coup:
        fig, err = _guard(plot_running_couplings, coup.get("learned"), coup.get("gaussian"))
        if fig is not None:
            files += save_figure(fig, base.with_name(base.name + "_couplings"))
        else:
            notes.append(f"point {pid}: no running-coupling plot ({err})")
    return list(files), notes


# ----------------------------------------------------------------------------- library entries
def output_prefix(run_dirs: Sequence, output: str | None) -> Path:
    """OUT: ``output`` (a directory gets ``aggregate`` inside; .csv/.h5 dropped), default
    the first run directory's ``aggregate``."""
    if output is None:
        return Path(run_dirs[0]) / "aggregate"
    out = Path(output)
    if out.is_dir() or str(output).endswith(("/", "\\")):
        return out / "aggregate"
    if out.suffix.lower() in _SUFFIXES:
        out = out.with_suffix("")
    if not out.name:
        raise ConfigError("--output", f"must name a file prefix, got {output!r}")
    return out


def _columns(rows: list[dict], columns: Sequence[str]) -> dict[str, list]:
    return {c: [r.get(c, "") for r in rows] for c in columns}


def aggregate(run_dirs: Sequence, output: str | None = None, *, plots: bool = True,
              n_boot: int = 1000, seed: int = 0) -> dict:
    """Aggregate ``run_dirs`` into OUT.csv / OUT.h5 (+ OUT_crossings/_peaks/_critical.csv and,
    with ``plots``, the figures in OUT_plots/).  Serial.

    Returns {"output", "files": {name: Path or list}, "rows", "tables" ({d: Table}),
    "analyses" (per d, lam, source), "crossings", "peaks", "critical" (row dicts), "notes"}.
    Every input is checked (ConfigError) before anything is written.
    """
    from rgdist.analysis.fss import CRITICAL_COLUMNS, write_rows_csv
    from rgdist.io.aggregate_file import write_aggregate

    rows, _, notes = collect(run_dirs)
    prefix = output_prefix(run_dirs, output)
    tables, more = fss_tables(rows)
    notes += more
    analyses = analyse(tables, n_boot=n_boot, seed=seed)
    cross, peaks, crit = crossing_rows(analyses), peak_rows(analyses), critical_rows(analyses)
    crit_cols = CRITICAL_EXTRA[:2] + CRITICAL_COLUMNS + CRITICAL_EXTRA[2:]

    def named(suffix):
        return prefix.with_name(prefix.name + suffix)

    files = {"csv": write_rows_csv(rows, named(".csv"), POINT_COLUMNS),
             "crossings_csv": write_rows_csv(cross, named("_crossings.csv"), CROSSING_COLUMNS),
             "peaks_csv": write_rows_csv(peaks, named("_peaks.csv"), PEAK_COLUMNS),
             "critical_csv": write_rows_csv(crit, named("_critical.csv"), crit_cols)}
    files["h5"] = write_aggregate(
        named(".h5"),
        {"points": _columns(rows, POINT_COLUMNS), "crossings": _columns(cross, CROSSING_COLUMNS),
         "peaks": _columns(peaks, PEAK_COLUMNS), "critical": _columns(crit, crit_cols)},
        {"run_dirs": [str(r) for r in run_dirs], "n_boot": int(n_boot), "seed": int(seed),
         "observables": list(TABLE_OBSERVABLES), "sources": sorted({r["source"] for r in rows}) or [""],
         "units": "lattice units (a = 1); m2, lam bare couplings of "
                  "S = sum_x [1/2 (d phi)^2 + 1/2 m2 phi^2 + lam/4 phi^4]"})
    files["plots"] = phase_figures(tables, analyses, named("_plots")) if plots else []
    return {"output": prefix, "files": files, "rows": rows, "tables": tables, "analyses": analyses,
            "crossings": cross, "peaks": peaks, "critical": crit, "notes": notes}


def plot_run(run_dir, output: str | None = None, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The figures of one run directory into ``output`` (default RUN_DIR/plots): the phase
    figures of :func:`aggregate` and, per point with flow data, the flow figures.

    Returns {"outdir", "files": [Path], "analyses", "notes"}.
    """
    rows, points, notes = collect([run_dir], flow=True)
    outdir = Path(output) if output is not None else Path(run_dir) / "plots"
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError("--output", f"{outdir} exists and is not a directory")
    tables, more = fss_tables(rows)
    notes += more
    analyses = analyse(tables, n_boot=n_boot, seed=seed)
    files = phase_figures(tables, analyses, outdir)
    with_flow = 0
    for pid, (_, p) in points.items():
        if p["flow"]:
            with_flow += 1
            f, n = flow_figures(pid, p["attrs"], p["flow"], outdir)
            files += f
            notes += n
    if not with_flow:
        notes.append("no flow data in the results (points/<id>/flow): flow figures skipped")
    return {"outdir": outdir, "files": files, "analyses": analyses, "notes": notes}


# ----------------------------------------------------------------------------- text report
def _fmt(v, e) -> str:
    from rgdist.campaign.report import fmt

    return fmt(float(v), float(e))


def _table_text(header: Sequence[str], body: list[Sequence]) -> str:
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
    return _table_text(("point", "N", "lam", "m2", "source", *(lbl for _, lbl in obs)), body)


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
            note))
    head = (("d",) if multi_d else ()) + ("lam", "source", "m2_c", "U*", "pairs", "gamma/nu", "note")
    return _table_text(head, body)


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
    if result["notes"]:
        parts += ["", *(f"note: {n}" for n in result["notes"])]
    f = result["files"]
    parts += ["", "wrote " + ", ".join(str(f[k]) for k in ("csv", "h5", "crossings_csv", "peaks_csv",
                                                            "critical_csv"))]
    if f["plots"]:
        parts.append(f"wrote {len(f['plots'])} figure files to {Path(f['plots'][0]).parent}")
    return "\n".join(parts)


def aggregate_cli(run_dirs: list[str], output: str | None) -> int:
    """`rgdist aggregate`: :func:`aggregate` and its report on stdout."""
    print(format_report(aggregate(run_dirs, output)))
    return exitcodes.OK


def plot_cli(run_dir: str, output: str | None) -> int:
    """`rgdist plot`: :func:`plot_run`, then the list of figures."""
    res = plot_run(run_dir, output)
    if res["analyses"]:
        print(analysis_text(res["analyses"]))
    for n in res["notes"]:
        print(f"note: {n}")
    pngs = [p for p in res["files"] if Path(p).suffix == ".png"]
    print(f"wrote {len(pngs)} figures (PNG + PDF) to {res['outdir']}")
    for p in pngs:
        print(f"  {Path(p).stem}")
    return exitcodes.OK
