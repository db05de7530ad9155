"""`rgdist aggregate RUN_DIR... [-o OUT]` and `rgdist plot RUN_DIR [-o OUT]`.

aggregate: read the results file of every run directory (serially) into one point table
(:mod:`~rgdist.campaign.aggregate.collect`), analyse it by finite-size scaling
(:mod:`~rgdist.campaign.aggregate.analyse`), write the tables and the figure pages
(:mod:`~rgdist.campaign.aggregate.figures`) and return what the report text
(:mod:`~rgdist.campaign.aggregate.text`) prints.

Outputs, for the prefix OUT (default: the first RUN_DIR/aggregate; a ``.csv``/``.h5``
suffix is dropped, an existing directory gets ``aggregate`` inside):
OUT.csv (point table), OUT.h5 (tables ``points``, ``crossings``, ``peaks``, ``critical``; see
rgdist.io.aggregate_file), OUT_crossings.csv, OUT_peaks.csv, OUT_critical.csv and the
figures (PNG + PDF) in OUT_plots/: U vs m2 with the crossings, chi/N^{7/4} vs the scaling
variable (m2 - m2_c) N (vs m2 when no m2_c), xi2/N vs m2, and the phase diagram.

Runs with HMC series (campaign ``measure.series: true``) add continuous curves from
multi-histogram reweighting in m2 (:mod:`~rgdist.campaign.aggregate.curves`): OUT_curves.json
(the curves with jackknife errors, skipped ranges, and the crossings on the curves next to the
grid-point crossings), OUT_curve_crossings.csv, the OUT.h5 tables ``curves`` and
``curve_crossings``, bands on the HMC figures and chi_curve_*.  Without series none of these
is written and the outputs are as before.

Runs with the flow baseline (campaign ``baseline:``; points/<id>/baseline) add its table
(:mod:`~rgdist.campaign.aggregate.baseline`: ESS/n, Pareto k, reweighted observables vs HMC
with z-scores) to the report and OUT_baseline.csv; without it nothing changes.

plot: the same phase figures for one run, plus per grid point the RG-flow figures when the
results hold flow data (with the flow baseline's observables along its own time tau) and the
baseline table.

Results files of layout 1 and 2 are read alike (rgdist.io.layout).  Bad input (missing
directory, not a run directory, no results file yet, unreadable results, the same grid point
in two inputs with different results) raises ConfigError before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rgdist import exitcodes
from rgdist.campaign.aggregate.analyse import (
    CRITICAL_EXTRA,
    CROSSING_COLUMNS,
    NOT_ENOUGH_SIZES,
    PEAK_COLUMNS,
    PEAK_OBSERVABLE,
    analyse,
    critical_columns,
    critical_rows,
    crossing_rows,
    fss_tables,
    peak_rows,
)
from rgdist.campaign.aggregate.baseline import BASELINE_COLUMNS, baseline_rows
from rgdist.campaign.aggregate.collect import (
    KEY_COLUMNS,
    POINT_COLUMNS,
    RESULT_NAMES,
    TABLE_OBSERVABLES,
    collect,
    merge_runs,
    point_rows,
    read_run,
)
from rgdist.campaign.aggregate.curves import (
    CURVE_COLUMNS,
    CURVE_CRITICAL_COLUMNS,
    CURVE_CROSSING_COLUMNS,
    curve_analysis,
    curve_critical_rows,
    curve_crossing_rows,
    curve_rows,
    curves_json,
    parse_m2_range,
)
from rgdist.campaign.aggregate.figures import flow_data, flow_figures, phase_figures
from rgdist.campaign.aggregate.text import (
    analysis_text,
    baseline_text,
    critical_text,
    curves_text,
    format_report,
    plot_text,
    points_text,
)
from rgdist.errors import ConfigError
from rgdist.io.layout import FLOW_KINDS

__all__ = [
    "RESULT_NAMES", "TABLE_OBSERVABLES", "KEY_COLUMNS", "POINT_COLUMNS", "CROSSING_COLUMNS",
    "PEAK_COLUMNS", "CRITICAL_EXTRA", "PEAK_OBSERVABLE", "NOT_ENOUGH_SIZES", "FLOW_KINDS",
    "read_run", "merge_runs", "point_rows", "collect", "fss_tables", "analyse", "crossing_rows",
    "peak_rows", "critical_rows", "critical_columns", "phase_figures", "flow_data", "flow_figures",
    "points_text", "analysis_text", "critical_text", "format_report", "plot_text",
    "CURVE_COLUMNS", "CURVE_CROSSING_COLUMNS", "CURVE_CRITICAL_COLUMNS", "curve_analysis",
    "curve_rows", "curve_crossing_rows", "curve_critical_rows", "curves_json", "curves_text",
    "BASELINE_COLUMNS", "baseline_rows", "baseline_text",
    "output_prefix", "aggregate", "plot_run", "aggregate_cli", "plot_cli",
]

_SUFFIXES = (".csv", ".h5", ".hdf5")


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
              n_boot: int = 1000, seed: int = 0, m2_range: str | None = None) -> dict:
    """Aggregate ``run_dirs`` into OUT.csv / OUT.h5 (+ OUT_crossings/_peaks/_critical.csv and,
    with ``plots``, the figures in OUT_plots/).  Serial.

    Returns {"output", "files": {name: Path or list}, "rows", "tables" ({d: Table}),
    "analyses" (per d, lam, source), "crossings", "peaks", "critical" (row dicts), "curves"
    (per d, lam with HMC series: curve_analysis), "curve_crossings" (row dicts), "baseline"
    (the flow baseline's rows, rgdist.campaign.aggregate.baseline), "notes"}.
    Every input is checked (ConfigError) before anything is written.
    """
    from rgdist.analysis.table import write_rows_csv
    from rgdist.io.aggregate_file import write_aggregate
    from rgdist.io.atomic import atomic_write_json

    rows, points, notes = collect(run_dirs, series=True, baseline=True)
    prefix = output_prefix(run_dirs, output)
    tables, more = fss_tables(rows)
    notes += more
    analyses = analyse(tables, n_boot=n_boot, seed=seed)
    cross, peaks, crit = crossing_rows(analyses), peak_rows(analyses), critical_rows(analyses)
    crit_cols = critical_columns()
    curves, more = curve_analysis(points, m2_range=parse_m2_range(m2_range))
    notes += more
    curve_cross = curve_crossing_rows(curves, cross)
    curve_crit = curve_critical_rows(curves)

    def named(suffix):
        return prefix.with_name(prefix.name + suffix)

    files = {"csv": write_rows_csv(rows, named(".csv"), POINT_COLUMNS),
             "crossings_csv": write_rows_csv(cross, named("_crossings.csv"), CROSSING_COLUMNS),
             "peaks_csv": write_rows_csv(peaks, named("_peaks.csv"), PEAK_COLUMNS),
             "critical_csv": write_rows_csv(crit, named("_critical.csv"), crit_cols)}
    h5_tables = {"points": _columns(rows, POINT_COLUMNS), "crossings": _columns(cross, CROSSING_COLUMNS),
                 "peaks": _columns(peaks, PEAK_COLUMNS), "critical": _columns(crit, crit_cols)}
    if curves:
        files["curves_json"] = atomic_write_json(named("_curves.json"), curves_json(curves, curve_cross))
        files["curve_crossings_csv"] = write_rows_csv(curve_cross, named("_curve_crossings.csv"),
                                                      CURVE_CROSSING_COLUMNS)
        files["curve_critical_csv"] = write_rows_csv(curve_crit, named("_curve_critical.csv"),
                                                     CURVE_CRITICAL_COLUMNS)
        h5_tables.update(curves=_columns(curve_rows(curves), CURVE_COLUMNS),
                         curve_crossings=_columns(curve_cross, CURVE_CROSSING_COLUMNS),
                         curve_critical=_columns(curve_crit, CURVE_CRITICAL_COLUMNS))
    base_rows = baseline_rows(points)
    if base_rows:
        files["baseline_csv"] = write_rows_csv(base_rows, named("_baseline.csv"), BASELINE_COLUMNS)
    files["h5"] = write_aggregate(
        named(".h5"), h5_tables,
        {"run_dirs": [str(r) for r in run_dirs], "n_boot": int(n_boot), "seed": int(seed),
         "observables": list(TABLE_OBSERVABLES), "sources": sorted({r["source"] for r in rows}) or [""],
         "units": "lattice units (a = 1); m2, lam bare couplings of "
                  "S = sum_x [1/2 (d phi)^2 + 1/2 m2 phi^2 + lam/4 phi^4]"})
    files["plots"] = (phase_figures(tables, analyses, named("_plots"), curves, curve_crit)
                      if plots else [])
    return {"output": prefix, "files": files, "rows": rows, "tables": tables, "analyses": analyses,
            "crossings": cross, "peaks": peaks, "critical": crit, "curves": curves,
            "baseline": base_rows,
            "curve_crossings": curve_cross, "curve_critical": curve_crit, "notes": notes}


def plot_run(run_dir, output: str | None = None, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The figures of one run directory into ``output`` (default RUN_DIR/plots): the phase
    figures of :func:`aggregate` and, per point with flow data (or flow-baseline results), the
    flow figures.

    Returns {"outdir", "files": [Path], "analyses", "baseline" (row dicts), "notes"}.
    """
    rows, points, notes = collect([run_dir], flow=True, baseline=True)
    outdir = Path(output) if output is not None else Path(run_dir) / "plots"
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError("--output", f"{outdir} exists and is not a directory")
    tables, more = fss_tables(rows)
    notes += more
    analyses = analyse(tables, n_boot=n_boot, seed=seed)
    files = phase_figures(tables, analyses, outdir)
    with_flow = 0
    for pid, (_, p) in points.items():
        if p["flow"] or p["baseline"]:
            with_flow += 1
            f, n = flow_figures(pid, p["attrs"], p["flow"], outdir, baseline=p["baseline"],
                                hmc=p["estimates"].get("hmc"))
            files += f
            notes += n
    if not with_flow:
        notes.append("no flow data in the results (points/<id>/flow): flow figures skipped")
    return {"outdir": outdir, "files": files, "analyses": analyses,
            "baseline": baseline_rows(points), "notes": notes}


def aggregate_cli(run_dirs: list[str], output: str | None, m2_range: str | None = None) -> int:
    """`rgdist aggregate`: :func:`aggregate` and its report on stdout."""
    print(format_report(aggregate(run_dirs, output, m2_range=m2_range)))
    return exitcodes.OK


def plot_cli(run_dir: str, output: str | None) -> int:
    """`rgdist plot`: :func:`plot_run`, then the list of figures (:func:`plot_text`)."""
    print(plot_text(plot_run(run_dir, output)))
    return exitcodes.OK
