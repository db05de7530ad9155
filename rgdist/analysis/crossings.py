"""Crossings of the curves of two sizes: Binder cumulant or xi2/N vs m2 (numpy only, no scipy:
the fits are weighted least squares written out here).

Crossings (:func:`binder_crossing`).  For two sizes, U_N(m2) ~ f((m2 - m2_c) N^{1/nu}) + ...,
so the curves of two sizes cross near m2_c.  U decreases with m2 (large m2 is the symmetric
phase), and the larger lattice has the steeper curve.

1. *Bracket*: both curves are interpolated piecewise-linearly onto the union of their m2 grids
   inside the common window; a sign change of D = U_b - U_a between neighbouring grid points
   brackets a crossing.  No sign change -> no crossing in the window (nan result with a
   reason, never an exception).  Several sign changes (noise where the curves run together,
   e.g. both near U = 2/3 deep in the broken phase) -> the split that best separates the
   signs is used: with z_j = D_j / sigma(D_j), the sign change maximizing
   |sum_{j<=i} z_j - sum_{j>i} z_j| among those where the two sums have opposite signs.
2. *Model* (``method``):
   - ``"poly"`` (default): for each curve a weighted least-squares polynomial of ``degree``
     (default 2) through the ``n_fit`` (default degree + 2) grid points nearest the bracket;
     the crossing is the root of p_b - p_a inside the common fit range closest to the bracket.
     A local fit averages the noise of neighbouring points and follows the curvature of U
     (the Binder scaling function is far from odd about U*, so a straight line between two
     points is biased on coarse grids).
   - ``"linear"``: the root of the piecewise-linear interpolants (no smoothing; unbiased only
     if the curves are straight between grid points).
3. *Errors*: parametric bootstrap.  Each replica draws every point's U from N(U, dU) with the
   given ``rng`` (fixed seed: reproducible), refits the SAME model (same windows) and
   refinds the root closest to the central estimate.  The error is the half width of the
   central 68.27 % interval of the replicas (robust against rare replicas with nearly
   parallel curves); replicas without a root in the window are counted in ``n_failed``.
   The central value is the estimate from the data themselves, not the replica mean.

Resolution: the model must follow the curves between grid points.  On synthetic Binder data
the local quadratic is unbiased (< 0.2 sigma) for m2 spacings up to ~0.8/N_b near the crossing
and biased by ~2 sigma at 1.6/N_b (e.g. N_b = 32 with spacing 0.05); refine the grid around
the crossing rather than trusting a coarse scan.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from rgdist.analysis.bootstrap import check_n_boot, curve_arrays, half_width_68, make_rng, sub_rng
from rgdist.analysis.table import Table, resolve_source

CROSSING_OBSERVABLES = ("binder", "xi_over_N")
CROSSING_METHODS = ("poly", "linear")

_N_GRID = 801  # dense m2 grid on which the polynomial models are compared


class Crossing(NamedTuple):
    """Result of :func:`binder_crossing`; ``reason`` is "" when a crossing was found.

    m2, dm2: crossing position and bootstrap error; U, dU: the curves' common value there;
    n_failed: bootstrap replicas without a crossing in the window; chi2_dof: the
    goodness of the two local fits together (nan for ``method="linear"`` or 0 dof).
    """

    m2: float
    dm2: float
    U: float
    dU: float
    n_failed: int
    reason: str = ""
    chi2_dof: float = math.nan

    @property
    def ok(self) -> bool:
        return self.reason == "" and math.isfinite(self.m2)


def _no_crossing(reason: str, n_boot: int = 0) -> Crossing:
    return Crossing(math.nan, math.nan, math.nan, math.nan, n_boot, reason)


def _interp_matrix(x: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """M with (M @ y)[q] = piecewise-linear interpolant of (x, y) at xq[q] (x[0] <= xq <= x[-1])."""
    j = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, len(x) - 2)
    w = (xq - x[j]) / (x[j + 1] - x[j])
    M = np.zeros((len(xq), len(x)))
    rows = np.arange(len(xq))
    M[rows, j] = 1.0 - w
    M[rows, j + 1] = w
    return M


def _poly_matrix(x: np.ndarray, dy: np.ndarray, xq: np.ndarray, degree: int,
                 center: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares polynomial fit as linear maps.

    Minimizes sum_i ((p(x_i) - y_i)/dy_i)^2 with p(x) = sum_k c_k t^k, t = (x - center)/scale.
    Returns (M, R): M @ y = p(xq), R @ y = p(x) (fitted values at the data points).
    """
    t = (x - center) / scale
    V = np.vander(t, degree + 1, increasing=True)
    A = V / dy[:, None]
    L = np.linalg.pinv(A) / dy[None, :]  # coefficients c = L @ y
    Vq = np.vander((xq - center) / scale, degree + 1, increasing=True)
    return Vq @ L, V @ L


def _roots_on_grid(xg: np.ndarray, Fa: np.ndarray, Fb: np.ndarray,
                   x_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the root of D = Fb - Fa (linear between grid points) closest to x_ref.

    Fa, Fb: (R, G) model values on the grid xg.  Returns (x_root, value) with nan where a
    row has no sign change.
    """
    D = Fb - Fa
    d0, d1 = D[:, :-1], D[:, 1:]
    cand = (d0 * d1 <= 0) & ~((d0 == 0) & (d1 == 0))
    denom = np.where(d0 != d1, d0 - d1, 1.0)
    w = np.where(cand, d0 / denom, 0.0)
    xr = xg[:-1] + w * (xg[1:] - xg[:-1])
    dist = np.where(cand, np.abs(xr - x_ref), np.inf)
    k = np.argmin(dist, axis=1)
    rows = np.arange(D.shape[0])
    found = np.isfinite(dist[rows, k])
    wk = w[rows, k]
    val_a = Fa[rows, k] + wk * (Fa[rows, k + 1] - Fa[rows, k])
    val_b = Fb[rows, k] + wk * (Fb[rows, k + 1] - Fb[rows, k])
    x = np.where(found, xr[rows, k], np.nan)
    val = np.where(found, 0.5 * (val_a + val_b), np.nan)
    return x, val


def binder_crossing(m2_a, U_a, dU_a, m2_b, U_b, dU_b, *, rng, n_boot: int = 1000,
                    method: str = "poly", degree: int = 2, n_fit: int | None = None) -> Crossing:
    """Crossing (m2_x, U_x) of two curves U_a(m2), U_b(m2) with parametric-bootstrap errors.

    See the module docstring for the method.  ``rng``: numpy Generator or int seed.
    Points with nan U are dropped.  Returns a :class:`Crossing`; if the curves do not cross
    inside the common m2 window the fields are nan and ``reason`` says why.
    """
    n_boot = check_n_boot(n_boot)
    rng = make_rng(rng)
    if method not in CROSSING_METHODS:
        raise ValueError(f"method must be one of {CROSSING_METHODS}, got {method!r}")
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or not 1 <= degree <= 5:
        raise ValueError(f"degree must be an integer in [1, 5], got {degree!r}")
    if n_fit is None:
        n_fit = degree + 2
    if isinstance(n_fit, bool) or not isinstance(n_fit, (int, np.integer)) or n_fit < degree + 1:
        raise ValueError(f"n_fit must be an integer >= degree + 1 = {degree + 1}, got {n_fit!r}")
    xa, ya, sa = curve_arrays("a", m2_a, U_a, dU_a)
    xb, yb, sb = curve_arrays("b", m2_b, U_b, dU_b)
    if len(xa) < 2 or len(xb) < 2:
        return _no_crossing("each curve needs at least 2 points with data", n_boot)
    lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
    if not hi > lo:
        return _no_crossing("the m2 ranges of the two curves do not overlap", n_boot)

    # 1. bracket on the union grid inside the common window
    xu = np.unique(np.concatenate([xa, xb]))
    xu = xu[(xu >= lo) & (xu <= hi)]
    Ma, Mb = _interp_matrix(xa, xu), _interp_matrix(xb, xu)
    D = Mb @ yb - Ma @ ya
    varD = (Mb**2) @ sb**2 + (Ma**2) @ sa**2
    cand = np.nonzero((D[:-1] * D[1:] <= 0) & ~((D[:-1] == 0) & (D[1:] == 0)))[0]
    if len(cand) == 0:
        side = "above" if D[0] > 0 else "below"
        return _no_crossing(
            f"no crossing in the window m2 in [{lo:.6g}, {hi:.6g}]: U_b stays {side} U_a", n_boot)
    z = D / np.sqrt(varD)
    left = np.cumsum(z)[cand]
    right = np.sum(z) - left
    score = np.where(left * right < 0, np.abs(left - right), -np.inf)
    i = cand[np.argmax(score)] if np.isfinite(score).any() else cand[
        np.argmax(np.abs(z[cand] - z[cand + 1]))]
    x_mid = 0.5 * (xu[i] + xu[i + 1])

    # 2. models: linear maps from data to values on an evaluation grid
    chi2_dof = math.nan
    if method == "linear":
        xg = xu
        Ga, Gb = Ma, Mb
    else:
        if len(xa) < degree + 1 or len(xb) < degree + 1:
            return _no_crossing(f"a degree-{degree} fit needs >= {degree + 1} points per curve", n_boot)
        na, nb = min(n_fit, len(xa)), min(n_fit, len(xb))
        wa = np.sort(np.argsort(np.abs(xa - x_mid), kind="stable")[:na])
        wb = np.sort(np.argsort(np.abs(xb - x_mid), kind="stable")[:nb])
        glo, ghi = max(xa[wa][0], xb[wb][0]), min(xa[wa][-1], xb[wb][-1])
        if not ghi > glo:
            return _no_crossing("the local fit windows of the two curves do not overlap", n_boot)
        xg = np.linspace(glo, ghi, _N_GRID)
        scale = max(ghi - glo, 1e-12)
        Pa, Ra = _poly_matrix(xa[wa], sa[wa], xg, degree, x_mid, scale)
        Pb, Rb = _poly_matrix(xb[wb], sb[wb], xg, degree, x_mid, scale)
        Ga = np.zeros((len(xg), len(xa)))
        Ga[:, wa] = Pa
        Gb = np.zeros((len(xg), len(xb)))
        Gb[:, wb] = Pb
        dof = na + nb - 2 * (degree + 1)
        if dof > 0:
            chi2 = np.sum(((Ra @ ya[wa] - ya[wa]) / sa[wa]) ** 2) + np.sum(((Rb @ yb[wb] - yb[wb]) / sb[wb]) ** 2)
            chi2_dof = float(chi2 / dof)

    x0, u0 = _roots_on_grid(xg, (Ga @ ya)[None, :], (Gb @ yb)[None, :], x_mid)
    if not np.isfinite(x0[0]):
        return _no_crossing("the fitted curves do not cross inside the fit window", n_boot)
    x0, u0 = float(x0[0]), float(u0[0])

    # 3. parametric bootstrap with the same models
    if n_boot == 0:
        return Crossing(x0, math.nan, u0, math.nan, 0, "", chi2_dof)
    Ya = ya + sa * rng.standard_normal((n_boot, len(ya)))
    Yb = yb + sb * rng.standard_normal((n_boot, len(yb)))
    xr, ur = _roots_on_grid(xg, Ya @ Ga.T, Yb @ Gb.T, x0)
    ok = np.isfinite(xr)
    return Crossing(x0, half_width_68(xr[ok]), u0, half_width_68(ur[ok]),
                    int(n_boot - ok.sum()), "", chi2_dof)


class PairCrossing(NamedTuple):
    """The crossing of the curves of sizes N_a < N_b."""

    N_a: int
    N_b: int
    crossing: Crossing


def crossings(table: Table, lam: float, observable: str = "binder", *, source: str | None = None,
              n_boot: int = 1000, seed: int = 0, method: str = "poly", degree: int = 2,
              n_fit: int | None = None) -> list[PairCrossing]:
    """Crossings of ``observable`` ("binder" or "xi_over_N") for successive sizes N_1 < N_2 < ...

    Each pair gets its own generator derived from ``seed`` and (lam, observable, N_a, N_b).
    """
    if observable not in CROSSING_OBSERVABLES:
        raise ValueError(f"observable must be one of {CROSSING_OBSERVABLES}, got {observable!r}")
    sub = table.select(lam=lam, source=resolve_source(table, source))
    sizes = sub.sizes()
    out = []
    for Na, Nb in zip(sizes[:-1], sizes[1:]):
        ca = sub.curve(Na, lam, observable)
        cb = sub.curve(Nb, lam, observable)
        rng = sub_rng(seed, float(lam), observable, int(Na), int(Nb))
        res = binder_crossing(*ca, *cb, rng=rng, n_boot=n_boot, method=method,
                              degree=degree, n_fit=n_fit)
        out.append(PairCrossing(int(Na), int(Nb), res))
    return out
