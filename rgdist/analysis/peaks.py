"""Susceptibility peaks: the maximum of chi_conn(m2) per size and gamma/nu from the power law
chi_peak ~ N^{gamma/nu} (weighted least squares of the logarithms)."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from rgdist.analysis.bootstrap import check_n_boot, curve_arrays, half_width_68, make_rng, sub_rng
from rgdist.analysis.table import OBSERVABLES, Table, resolve_source


class Peak(NamedTuple):
    """Maximum of a curve from the parabola through its top three points."""

    N: int
    m2: float
    dm2: float
    height: float
    dheight: float
    n_failed: int
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == "" and math.isfinite(self.height)


class PeakScaling(NamedTuple):
    """Per-size peaks and the fit log chi_peak = (gamma/nu) log N + c."""

    peaks: tuple[Peak, ...]
    gamma_over_nu: float
    dgamma_over_nu: float
    c: float
    dc: float
    chi2: float
    dof: int
    reason: str = ""


def _parabola_vertex(x3: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex (x_v, y_v) of the parabola through (x3[k], Y[:, k]); also its curvature a.

    y = a (x - x1)^2 + b (x - x1) + y1 with x1 the middle point.
    """
    h0, h2 = x3[0] - x3[1], x3[2] - x3[1]
    y0, y1, y2 = Y[:, 0], Y[:, 1], Y[:, 2]
    # solve a h^2 + b h = y - y1 for h = h0, h2
    det = h0 * h0 * h2 - h2 * h2 * h0
    a = ((y0 - y1) * h2 - (y2 - y1) * h0) / det
    b = (h0 * h0 * (y2 - y1) - h2 * h2 * (y0 - y1)) / det
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = x3[1] - b / (2 * a)
        yv = y1 - b * b / (4 * a)
    return xv, yv, a


def curve_peak(m2, y, dy, *, rng, n_boot: int = 1000, N: int = 0) -> Peak:
    """Maximum of y(m2): parabola through the largest point and its two neighbours.

    Bootstrap: the three points are redrawn from N(y, dy) (same three points), the vertex
    refound; replicas whose parabola opens upward or whose vertex leaves the three-point
    range fail.  Errors: half width of the central 68 % interval.

    The grid must resolve the peak: spacing well below its width (~ N^{-1/nu} in m2), yet
    wide enough that the curvature across three points exceeds the noise -- otherwise the
    choice of the largest noisy point biases the height upward, which the bootstrap (same
    three points) does not see.  Scans in the scaling variable (m2 grid ~ 1/N) do both.
    """
    n_boot = check_n_boot(n_boot)
    rng = make_rng(rng)
    x, y, dy = curve_arrays("peak", m2, y, dy)
    if len(x) < 3:
        return Peak(N, math.nan, math.nan, math.nan, math.nan, n_boot, "fewer than 3 points")
    i = int(np.argmax(y))
    if i == 0 or i == len(x) - 1:
        return Peak(N, math.nan, math.nan, math.nan, math.nan, n_boot,
                    f"the maximum lies at the edge of the scanned window (m2 = {x[i]:.6g})")
    x3, y3, s3 = x[i - 1:i + 2], y[i - 1:i + 2], dy[i - 1:i + 2]
    xv, yv, _ = _parabola_vertex(x3, y3[None, :])
    xv, yv = float(xv[0]), float(yv[0])
    if n_boot == 0:
        return Peak(N, xv, math.nan, yv, math.nan, 0)
    Y = y3 + s3 * rng.standard_normal((n_boot, 3))
    xr, yr, a = _parabola_vertex(x3, Y)
    ok = (a < 0) & (xr >= x3[0]) & (xr <= x3[2])
    return Peak(N, xv, half_width_68(xr[ok]), yv, half_width_68(yr[ok]), int(n_boot - ok.sum()))


def fit_power_law(N, y, dy) -> tuple[float, float, float, float, float, int]:
    """Weighted least squares of log y = p log N + c with sigma_log = dy / y.

    Returns (p, dp, c, dc, chi2, dof); dp, dc from the covariance (inverse normal matrix),
    not rescaled by chi2/dof.
    """
    N = np.asarray(N, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    if len(N) < 2:
        raise ValueError(f"a power-law fit needs >= 2 sizes, got {len(N)}")
    if np.any(y <= 0) or np.any(~(dy > 0)):
        raise ValueError("y must be > 0 and dy > 0 for a power-law fit")
    X = np.stack([np.log(N), np.ones_like(N)], axis=1)
    w = (y / dy) ** 2
    A = X.T @ (X * w[:, None])
    cov = np.linalg.inv(A)
    p, c = cov @ (X.T @ (w * np.log(y)))
    chi2 = float(np.sum(w * (np.log(y) - X @ np.array([p, c])) ** 2))
    return float(p), float(math.sqrt(cov[0, 0])), float(c), float(math.sqrt(cov[1, 1])), chi2, len(N) - 2


def susceptibility_peaks(table: Table, lam: float, *, observable: str = "chi_conn",
                         source: str | None = None, n_boot: int = 1000,
                         seed: int = 0) -> PeakScaling:
    """Per size the peak of chi_conn(m2) (:func:`curve_peak`) and gamma/nu from
    log chi_peak = (gamma/nu) log N + c (:func:`fit_power_law`, needs >= 2 sizes with a peak).

    2D Ising: gamma/nu = 7/4.  The peak height is only as good as the grid resolves the
    peak: its width in m2 shrinks like N^{-1/nu}.
    """
    if observable not in OBSERVABLES:
        raise ValueError(f"observable must be one of {OBSERVABLES}, got {observable!r}")
    sub = table.select(lam=lam, source=resolve_source(table, source))
    peaks = []
    for N in sub.sizes():
        m2, y, dy = sub.curve(N, lam, observable)
        peaks.append(curve_peak(m2, y, dy, rng=sub_rng(seed, float(lam), observable, int(N)),
                                n_boot=n_boot, N=int(N)))
    good = [p for p in peaks if p.ok and math.isfinite(p.dheight) and p.dheight > 0]
    if len(good) < 2:
        return PeakScaling(tuple(peaks), math.nan, math.nan, math.nan, math.nan, math.nan, 0,
                           f"need peaks (with errors) at >= 2 sizes, have {len(good)}")
    p, dp, c, dc, chi2, dof = fit_power_law([q.N for q in good], [q.height for q in good],
                                            [q.dheight for q in good])
    return PeakScaling(tuple(peaks), p, dp, c, dc, chi2, dof)
