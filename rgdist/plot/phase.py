"""Finite-size-scaling and phase-diagram figures (matplotlib, imported lazily, Agg canvas).

Every function takes the data and an optional matplotlib ``ax`` (a new Agg figure when
None) and returns the figure; nothing touches pyplot's global state.  All quantities are in
lattice units (a = 1): m2 and lam are the bare couplings of
S = sum_x [1/2 (d phi)^2 + 1/2 m2 phi^2 + lam/4 phi^4].
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from rgdist.analysis.critical import BINDER_STAR, GAMMA_OVER_NU_ISING, NU_ISING, XI_OVER_N_STAR, CriticalPoint
from rgdist.analysis.crossings import PairCrossing
from rgdist.analysis.table import Table, resolve_source

M2_LABEL = r"bare mass $m^2$ (lattice units, $a=1$)"
LAM_LABEL = r"bare coupling $\lambda$ (lattice units, $a=1$)"
_CURVES = {
    "binder": (r"Binder cumulant $U = 1 - \langle M^4\rangle / 3\langle M^2\rangle^2$",
               BINDER_STAR, r"2D Ising $U^* \approx %.4f$"),
    "xi_over_N": (r"$\xi_2 / N$ (second-moment correlation length / box size)",
                  XI_OVER_N_STAR, r"2D Ising $\xi_2/N \approx %.3f$"),
}


def _axes(ax, figsize=(5.6, 4.2)):
    """(fig, ax): the given axes' figure, or a new figure on an Agg canvas."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _frac(x: float) -> str:
    f = Fraction(x).limit_denominator(16)
    if abs(float(f) - x) > 1e-9:
        return f"{x:g}"
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def plot_crossing_curves(table: Table, lam: float, ax=None, *, observable: str = "binder",
                         source: str | None = None,
                         crossings: Sequence[PairCrossing] | None = None,
                         reference: bool = True):
    """``observable`` ("binder" or "xi_over_N") vs m2, one curve per N, with error bars.

    ``crossings`` (from :func:`rgdist.analysis.crossings`) are marked with their errors;
    ``reference`` draws the 2D Ising value at criticality as a dashed line.
    """
    if observable not in _CURVES:
        raise ValueError(f"observable must be one of {tuple(_CURVES)}, got {observable!r}")
    fig, ax = _axes(ax)
    source = resolve_source(table, source)
    sub = table.select(lam=lam, source=source)
    for N in sub.sizes():
        m2, y, dy = sub.curve(N, lam, observable)
        ax.errorbar(m2, y, yerr=dy, marker="o", ms=3.5, capsize=2, lw=1, label=f"N = {N}")
    ylabel, ref, ref_label = _CURVES[observable]
    if reference:
        ax.axhline(ref, color="0.4", ls="--", lw=0.8, label=ref_label % ref)
    for pc in crossings or ():
        c = pc.crossing
        if c.ok:
            ax.errorbar([c.m2], [c.U], xerr=[c.dm2], yerr=[c.dU], fmt="*", ms=11, color="k",
                        mfc="gold", capsize=3, zorder=5,
                        label=f"crossing {pc.N_a}/{pc.N_b}: $m^2$ = {c.m2:.4f}({_err_digits(c.dm2)})")
    ax.set_xlabel(M2_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(rf"$\lambda$ = {lam:g}" + (f" ({source})" if source else ""))
    ax.legend(fontsize="small")
    return fig


def _err_digits(err: float) -> str:
    """Error in units of the 4th decimal, for the compact value(err) notation."""
    return "?" if not np.isfinite(err) else f"{int(round(err * 1e4))}"


def plot_binder(table: Table, lam: float, ax=None, **kwargs):
    """Binder cumulant U vs m2 per N (see :func:`plot_crossing_curves`)."""
    return plot_crossing_curves(table, lam, ax, observable="binder", **kwargs)


def plot_xi_over_N(table: Table, lam: float, ax=None, **kwargs):
    """xi2/N vs m2 per N (see :func:`plot_crossing_curves`)."""
    return plot_crossing_curves(table, lam, ax, observable="xi_over_N", **kwargs)


def plot_chi_collapse(table: Table, lam: float, ax=None, *, observable: str = "chi",
                      m2_c: float | None = None, nu: float = NU_ISING,
                      gamma_over_nu: float = GAMMA_OVER_NU_ISING, source: str | None = None):
    """chi / N^{gamma/nu} per N; vs m2, or vs the scaling variable (m2 - m2_c) N^{1/nu}
    when ``m2_c`` is given (the curves of all N then collapse onto one near criticality)."""
    if observable not in ("chi", "chi_conn"):
        raise ValueError(f"observable must be 'chi' or 'chi_conn', got {observable!r}")
    if not (np.isfinite(nu) and nu > 0):
        raise ValueError(f"nu must be a finite number > 0, got {nu!r}")
    fig, ax = _axes(ax)
    source = resolve_source(table, source)
    sub = table.select(lam=lam, source=source)
    for N in sub.sizes():
        m2, y, dy = sub.curve(N, lam, observable)
        scale = float(N) ** gamma_over_nu
        x = m2 if m2_c is None else (m2 - m2_c) * float(N) ** (1 / nu)
        ax.errorbar(x, y / scale, yerr=dy / scale, marker="o", ms=3.5, capsize=2, lw=1,
                    label=f"N = {N}")
    sym = r"\chi" if observable == "chi" else r"\chi_{\rm conn}"
    ax.set_ylabel(rf"${sym} / N^{{{_frac(gamma_over_nu)}}}$ (lattice units)")
    if m2_c is None:
        ax.set_xlabel(M2_LABEL)
    else:
        ax.set_xlabel(rf"$(m^2 - m^2_c)\,N^{{1/\nu}}$, $m^2_c$ = {m2_c:.4f}, $\nu$ = {nu:g} "
                      "(lattice units)")
    ax.set_title(rf"$\lambda$ = {lam:g}, $\gamma/\nu$ = {_frac(gamma_over_nu)}"
                 + (f" ({source})" if source else ""))
    ax.legend(fontsize="small")
    return fig


def _draw_anchors(ax, lams) -> None:
    """The published anchors (rgdist.analysis.critical): the leading-order continuum line
    over the lam range and the lattice m2_c where known."""
    from rgdist.analysis.critical import F_C, LATTICE_M2C, continuum_critical_m2

    lams = [float(x) for x in lams if np.isfinite(x) and x > 0]
    if not lams:
        return
    lo, hi = min(lams), max(lams)
    grid = np.linspace(lo, hi, 64) if hi > lo else np.array([lo])
    ax.plot(grid, [continuum_critical_m2(x) for x in grid], "--", color="0.45", lw=1,
            label=rf"continuum, leading order ($f_c = {F_C}$)", zorder=2)
    ref = [(x, m) for x, m in LATTICE_M2C.items() if lo - 1e-12 <= x <= hi + 1e-12]
    if ref:
        ax.plot(*zip(*ref), "*", color="k", ms=9, label="lattice (infinite volume)", zorder=4)


def plot_phase_diagram(points: Sequence[CriticalPoint], ax=None, *, table: Table | None = None,
                       label: str = "critical line", anchors: bool = True):
    """The (lam, m2) phase diagram: m2_c(lam) with total error bars, joined by a line.

    Below the line (m2 < m2_c) the Z2 symmetry is broken, above it the phase is symmetric.
    ``table`` (optional) adds the scanned grid points.  Points without a crossing are skipped.
    ``anchors`` (on a new figure): the leading-order continuum line and the lattice value of
    rgdist.analysis.critical, for comparison.
    """
    first = ax is None
    fig, ax = _axes(ax)
    if table is not None:
        ax.plot(table.column("lam"), table.column("m2"), ".", color="0.75", ms=3,
                label="scanned grid", zorder=1)
    good = [p for p in points if p.ok]
    if first and anchors:
        _draw_anchors(ax, [p.lam for p in points] + (list(table.column("lam")) if table is not None else []))
    if good:
        lam = np.array([p.lam for p in good])
        m2c = np.array([p.m2_c for p in good])
        err = np.array([p.dm2 if np.isfinite(p.dm2) else 0.0 for p in good])
        ax.errorbar(lam, m2c, yerr=err, fmt="o-", ms=4, capsize=3, color="C3", label=label,
                    zorder=3)
        ax.text(0.04, 0.06, "broken phase\n" + r"($\langle|M|\rangle \neq 0$)",
                transform=ax.transAxes, fontsize="small", va="bottom")
        # m2_c falls with lam, so the symmetric side's free corner is just above the line's
        # right end (the upper right holds the legend)
        y0, y1 = ax.get_ylim()
        ax.text(lam.max(), m2c[np.argmax(lam)] + 0.3 * (y1 - y0), "symmetric phase",
                fontsize="small", ha="right", va="bottom")
    missing = len(points) - len(good)
    if missing:
        ax.plot([], [], " ", label=f"{missing} lam without a crossing")
    ax.set_xlabel(LAM_LABEL)
    ax.set_ylabel(r"critical bare mass $m^2_c$ (lattice units, $a=1$)")
    ax.set_title(r"phase diagram of 2D $\phi^4$")
    ax.legend(fontsize="small", loc="upper right")
    return fig


def save_figure(fig, path_without_ext) -> tuple[Path, Path]:
    """Write ``fig`` as PNG (150 dpi) and PDF next to each other; returns both paths.

    The extensions are appended (a dot inside the name, e.g. ``binder_lam1.0``, is kept).
    """
    base = Path(path_without_ext)
    base.parent.mkdir(parents=True, exist_ok=True)
    png = base.with_name(base.name + ".png")
    pdf = base.with_name(base.name + ".pdf")
    fig.savefig(png, dpi=150)
    fig.savefig(pdf)
    return png, pdf
