"""Continuous curves from reweighting in m2 (rgdist.analysis.reweight_curves) on the phase
figures: a line with its jackknife band per lattice size, in the colour of that size's grid
points, and the crossings found on the curves (diamonds; the grid-point crossings of
rgdist.plot.phase are stars).  matplotlib is imported lazily (Agg canvas, no pyplot state).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from rgdist.plot.phase import M2_LABEL, _axes

__all__ = ["add_curve_bands", "plot_chi_curves"]


def _size_colour(ax, N: int, k: int) -> str:
    """The colour of the errorbar labelled ``N = {N}`` on ``ax``, else the k-th cycle colour."""
    for c in ax.containers:
        if c.get_label() == f"N = {N}":
            return c.lines[0].get_color()
    return f"C{k}"


def add_curve_bands(ax, curves: Sequence[tuple], crossings: Sequence[tuple] = (), *,
                    scale=None) -> None:
    """Draw ``curves`` [(N, m2, value, error)] as line + band (nan = not supported: gaps) and
    ``crossings`` [(N_a, N_b, m2, dm2, value, dvalue)] found on them; ``scale(N)`` divides the
    values of size N (e.g. N^{7/4} for chi)."""
    for k, (N, m2, value, error) in enumerate(curves):
        s = 1.0 if scale is None else float(scale(N))
        v, e = np.asarray(value, dtype=np.float64) / s, np.asarray(error, dtype=np.float64) / s
        colour = _size_colour(ax, N, k)
        ax.fill_between(m2, v - e, v + e, color=colour, alpha=0.25, lw=0)
        ax.plot(m2, v, color=colour, lw=1.2, label=f"N = {N} reweighted (band: 1 sigma)")
    for N_a, N_b, m2, dm2, value, dvalue in crossings:
        if np.isfinite(m2):
            ax.errorbar([m2], [value], xerr=[dm2], yerr=[dvalue], fmt="D", ms=6, color="k",
                        mfc="white", capsize=3, zorder=6,
                        label=f"curve crossing {N_a}/{N_b}: $m^2$ = {m2:.4f}({_digits(dm2)})")
    ax.legend(fontsize="x-small")


def _digits(err: float) -> str:
    return "?" if not np.isfinite(err) else f"{int(round(err * 1e4))}"


def plot_chi_curves(points: Sequence[tuple], curves: Sequence[tuple], lam: float, ax=None, *,
                    source: str = "hmc"):
    """chi = V <M^2> vs m2: the grid points [(N, m2, chi, dchi)] with error bars and the
    reweighted curves [(N, m2, value, error)] with their bands."""
    fig, ax = _axes(ax)
    for N, m2, y, dy in points:
        ax.errorbar(m2, y, yerr=dy, marker="o", ms=3.5, capsize=2, lw=0, elinewidth=1,
                    label=f"N = {N}")
    add_curve_bands(ax, curves)
    ax.set_yscale("log")
    ax.set_xlabel(M2_LABEL)
    ax.set_ylabel(r"$\chi = V \langle M^2 \rangle$ (lattice units)")
    ax.set_title(rf"$\lambda$ = {lam:g} ({source}, reweighted in $m^2$)")
    return fig
