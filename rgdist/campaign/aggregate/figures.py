"""Figure pages (PNG + PDF, rgdist.plot): the phase figures of a scan -- U vs m2 with the
crossings, chi/N^{7/4} vs the scaling variable (m2 - m2_c) N (vs m2 when no m2_c), xi2/N vs m2,
the phase diagram -- and, per grid point, the RG-flow figures when the results hold flow data.
With reweighted curves (rgdist.campaign.aggregate.curves: HMC series) the HMC figures of U and
xi2/N also draw the curves with their jackknife bands and the crossings found on them
(diamonds; stars: the crossings of the grid points), and chi_curve_* shows chi(m2).

Flow data read (layout-2 names, rgdist.io.layout; absent: skipped with a note)::

    points/<id>/flow/<kind>/t, <observable> (2, K[, *shape]), snapshots    kind: forward |
                                                 learned | gaussian (FlowResult.to_arrays)
    points/<id>/flow/couplings/<kind>/t, <operator> (K,)                 kind: learned | gaussian
    points/<id>/flow/deviation/<observable> (K,)   (learned - forward)/sigma (else recomputed)

The figures call the forward flow the "exact" RG flow (its physics name). With the flow
baseline's results (``points/<id>/baseline/flow/...``, rgdist.campaign.stages.baseline) the
panels get a second row along the baseline's own time tau in [0, 1] (not a scheme time), with
the HMC values and the reweighted baseline at tau = 1, and ``flow_<id>_baseline`` shows m_R,
Z, lambda_R, chi, U and <max_x |phi_x|> along tau.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rgdist.campaign.aggregate.analyse import guard
from rgdist.campaign.aggregate.baseline import baseline_flow
from rgdist.campaign.aggregate.collect import point_label, shape_of
from rgdist.io.layout import FLOW_KINDS

#: how the figures label each flow kind (row labels of the snapshot images)
FLOW_LABELS = {"forward": "exact", "learned": "learned", "gaussian": "gaussian"}


def _base(name: str, e: dict, multi_d: bool) -> str:
    return f"{name}_lam{e['lam']:g}_{e['source']}" + (f"_d{e['d']}" if multi_d else "")


def _curve_items(c: dict, obs: str) -> tuple[list, list]:
    """([(N, m2, value, error)], [(N_a, N_b, m2, dm2, value, dvalue)]) of one curve analysis."""
    bands = [(N, cv.grid, cv.value[obs], cv.error[obs]) for N, cv in c["curves"].items() if not cv.reason]
    cross = [(x.N_a, x.N_b, x.m2, x.dm2, x.value, x.dvalue) for x in c["crossings"]
             if x.observable == obs and x.ok]
    return bands, cross


def phase_figures(tables: dict, analyses: list[dict], outdir: Path,
                  curves: list[dict] | None = None,
                  curve_critical: list[dict] | None = None) -> list[Path]:
    """U and xi2/N vs m2 with crossings, chi/N^{gamma/nu} collapse, the phase diagram (with
    the anchors of rgdist.analysis.critical); with ``curves``
    (rgdist.campaign.aggregate.curves.curve_analysis) their bands and chi(m2), and with
    ``curve_critical`` the critical line from the curves on the phase diagram."""
    from rgdist.analysis.critical import GAMMA_OVER_NU_ISING, NU_ISING
    from rgdist.plot.curves import add_curve_bands, plot_chi_curves
    from rgdist.plot.phase import plot_binder, plot_chi_collapse, plot_xi_over_N, save_figure

    files: list[Path] = []
    multi_d = len(tables) > 1
    by_line = {(c["d"], round(c["lam"], 12)): c for c in curves or ()}
    for e in analyses:
        table = tables[e["d"]]
        kw = dict(source=e["source"], reference=e["d"] == 2)
        c = by_line.get((e["d"], round(e["lam"], 12))) if e["source"] == "hmc" else None
        for name, plot in (("binder", plot_binder), ("xi_over_N", plot_xi_over_N)):
            fig = plot(table, e["lam"], crossings=e[name], **kw)
            if c is not None:
                add_curve_bands(fig.axes[0], *_curve_items(c, name))
            files += save_figure(fig, outdir / _base(name, e, multi_d))
        if c is not None:
            sub = table.select(lam=e["lam"], source="hmc")
            pts = [(N, *sub.curve(N, e["lam"], "chi")) for N in sub.sizes()]
            fig = plot_chi_curves(pts, _curve_items(c, "chi")[0], e["lam"])
            files += save_figure(fig, outdir / _base("chi_curve", e, multi_d))
        if e["d"] == 2:  # the 2D Ising exponents (SPEC section 7)
            cp = e["critical"]
            m2_c = cp.m2_c if cp is not None and cp.ok else None
            fig = plot_chi_collapse(table, e["lam"], source=e["source"], m2_c=m2_c,
                                    nu=NU_ISING, gamma_over_nu=GAMMA_OVER_NU_ISING)
            files += save_figure(fig, outdir / _base("chi_collapse", e, multi_d))
    for d, table in tables.items():
        by_source = {src: [e["critical"] for e in analyses if e["d"] == d and e["source"] == src
                           and e["critical"] is not None] for src in table.sources()}
        line = [r for r in curve_critical or () if r["d"] == d and r["reason"] == ""]
        fig = phase_diagram_figure(table, by_source, line)
        if fig is not None:
            files += save_figure(fig, outdir / ("phase_diagram" + (f"_d{d}" if multi_d else "")))
    return list(files)


def phase_diagram_figure(table, by_source: dict, curve_line: list[dict]):
    """The phase diagram of one dimension: per source its critical line from the grid-point
    crossings (``by_source``: {source: [CriticalPoint]}, own colour), the scanned grid and the
    anchors, and ``curve_line`` (rows of the critical line from the continuous curves:
    lam, m2_c, dm2); None when there is nothing to draw."""
    from rgdist.plot.phase import plot_phase_diagram

    fig, ax = None, None
    for k, src in enumerate(table.sources()):
        pts = by_source.get(src, [])
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
    if curve_line:
        if fig is None:
            fig = plot_phase_diagram([], None, table=table)
            ax = fig.axes[0]
        ax.errorbar([r["lam"] for r in curve_line], [r["m2_c"] for r in curve_line],
                    yerr=[r["dm2"] for r in curve_line], fmt="s-", ms=4, capsize=3, color="C2",
                    label="critical line (hmc, continuous curves)", zorder=3)
    if fig is not None:
        ax.legend(fontsize="small", loc="upper right")  # the phase labels are elsewhere
    return fig


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


def flow_figures(pid: str, attrs: dict, arrays: dict, outdir: Path, *, baseline: dict | None = None,
                 hmc: dict | None = None) -> tuple[list[Path], list[str]]:
    """Forward vs learned (vs Gaussian) flow panels, deviations, G2, snapshots, couplings; with
    ``baseline`` (the point's baseline/ arrays) the flow baseline along tau, against ``hmc``
    (the point's HMC estimates {name: (value, err)})."""
    from rgdist.plot.flow import (plot_baseline_panels, plot_flow_deviations, plot_flow_panels,
                                  plot_flow_snapshots, plot_g2_flow, plot_running_couplings,
                                  save_figure)

    res, coup, stored_dev, notes = flow_data(arrays)
    bl, targets, rw, more = baseline_flow(baseline or {}, attrs, hmc or {})
    notes = [f"point {pid}: {n}" for n in notes + more]
    files: list[Path] = []
    base = outdir / f"flow_{pid}"
    title = f"{pid}: {point_label(attrs)}"
    flows = list(res.values()) + ([bl] if bl is not None else [])
    if flows:
        names = [n for n in ("m_R_L", "Z", "lambda_R") if all(n in r for r in flows)]
        names = names or [n for n in ("m_R", "chi", "binder", "xi2") if all(n in r for r in flows)]
        if names:
            files += save_figure(plot_flow_panels(res.get("forward"), res.get("learned"),
                                                  res.get("gaussian"), names, title=title,
                                                  baseline=bl, targets=targets, reweighted=rw),
                                 base.with_name(base.name + "_panels"))
        else:
            notes.append(f"point {pid}: the flows share no scalar observable; panels skipped")
    if bl is not None:
        fig, err = guard(plot_baseline_panels, bl, targets=targets, reweighted=rw,
                         title=f"{title}: flow baseline (CNF) along its own time tau")
        if fig is not None:
            files += save_figure(fig, base.with_name(base.name + "_baseline"))
        else:
            notes.append(f"point {pid}: no baseline plot ({err})")
    if res:
        if "forward" in res and "learned" in res:
            from rgdist.flow.learned import compare_flows

            # the runner's stored (learned - forward)/sigma per t_k, else recomputed
            devs = {k: v for k, v in stored_dev.items() if v.shape == res["forward"].t.shape}
            err = ""
            if not devs:
                devs, err = guard(compare_flows, res["forward"], res["learned"])
            if devs:
                files += save_figure(plot_flow_deviations(devs, res["forward"].t),
                                     base.with_name(base.name + "_deviations"))
            elif err:
                notes.append(f"point {pid}: no deviation plot ({err})")
        with_g2 = {k: r for k, r in res.items() if "g2" in r}
        if with_g2:
            from rgdist.lattice import Lattice

            fig, err = guard(plot_g2_flow, Lattice(shape_of(attrs)), with_g2.get("forward"),
                             with_g2.get("learned"), with_g2.get("gaussian"))
            if fig is not None:
                files += save_figure(fig, base.with_name(base.name + "_g2"))
            else:
                notes.append(f"point {pid}: no G2 plot ({err})")
        snaps = {FLOW_LABELS[k]: r.snapshots for k, r in res.items() if r.snapshots is not None}
        if snaps and len(shape_of(attrs)) == 2:
            fig = plot_flow_snapshots(snaps, {FLOW_LABELS[k]: r.t for k, r in res.items()
                                              if r.snapshots is not None})
            files += save_figure(fig, base.with_name(base.name + "_snapshots"))
    if coup:
        fig, err = guard(plot_running_couplings, coup.get("learned"), coup.get("gaussian"))
        if fig is not None:
            files += save_figure(fig, base.with_name(base.name + "_couplings"))
        else:
            notes.append(f"point {pid}: no running-coupling plot ({err})")
    return list(files), notes
