"""Continuous curves in m2 from multi-histogram reweighting of HMC series, and the crossings of
two sizes' curves (numpy only; the reweighting is :class:`rgdist.analysis.reweight_m2.MultiHistogram`).

Input: for one lattice size and lam, K >= 2 ensembles at distinct m2_k, each with its
per-configuration series (``phi2_sum`` = sum_x phi^2, ``m`` = M, ``g2_p1`` = G2 at the lowest
momenta, ``chain``; results ``points/<id>/series``).  :func:`reweighted_curve` evaluates U,
chi = V <M^2> and xi2/N on the targets of a fine m2 grid:

* *Groups*: neighbouring ensembles (sorted by m2) whose single-histogram reweighting onto each
  other keeps a Kish ESS >= the library's threshold (in at least one direction) are combined
  into one multi-histogram; a pair without that overlap splits the line into groups solved
  separately (the free energy across such a gap is not determined by the data).  A target
  belongs to the group whose m2 range holds it (in a gap: the nearer group).
* *Support*: a target is evaluated only where its group's Kish ESS reaches the threshold
  (:func:`rgdist.analysis.reweight_core.default_min_ess` of the group's configurations);
  the others are reported as skipped ranges with the library's refusal (naming the first
  target refused) and the m2 range the data do support.
* *Errors*: the library's stratified delete-one-bin jackknife, the free energies re-solved in
  every replica (so they include the reweighting).  Bins: the chain index modulo ``max_bins``
  (independent chains), or ``max_bins`` contiguous blocks of an ensemble with a single chain.
  tau_int is not used (g_k = 1: the weights stay consistent, only not optimal, when the
  ensembles' autocorrelations differ; the chain bins keep the errors valid).

:func:`curve_crossing`: the root of D(m2) = Y_b(m2) - Y_a(m2) of two sizes' curves (Y = U or
xi2/N) on their common supported targets: the sign change of D (several: the split that best
separates the signs, as rgdist.analysis.crossings), then the two curves re-evaluated by
reweighting on a local grid of ``n_local`` targets across the bracket and 4 grid steps on
either side, and the root of the linear interpolant there.  Jackknife: every replica of
either size (the other at its full estimate) gives a root (on the local grid, else on the
common grid targets); the sizes are independent, so they are two more strata of the
stratified jackknife.  A replica without any root makes the crossing "not stable" (no error).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rgdist.analysis.crossings import _roots_on_grid
from rgdist.analysis.reweight_core import default_min_ess, kish_ess
from rgdist.analysis.reweight_errors import jackknife_error
from rgdist.analysis.reweight_m2 import DS_DM2, MultiHistogram

__all__ = ["CURVE_OBSERVABLES", "CurveCrossing", "Ensemble", "ReweightedCurve", "Segment",
           "curve_crossing", "reweighted_curve"]

#: the curves: Binder U, chi = V <M^2>, xi2 / N
CURVE_OBSERVABLES = ("binder", "chi", "xi_over_N")
MAX_BINS = 16  # jackknife blocks per ensemble (chains % 16): 16 K replicas, each a full re-solve
N_LOCAL = 25
LOCAL_STEPS = 4  # the local grid spans the bracket and 4 grid steps on each side


@dataclass
class Ensemble:
    """The series of one grid point: per configuration E = sum_x phi^2, M, G2(p1) (n, d), chain."""

    m2: float
    phi2_sum: np.ndarray
    m: np.ndarray
    g2_p1: np.ndarray
    chain: np.ndarray


@dataclass
class Segment:
    """One multi-histogram group of a curve: its ensembles' m2, the grid indices it evaluates
    (supported targets only) and the jackknifed curves there."""

    m2: list
    mh: MultiHistogram
    index: np.ndarray
    estimates: dict


@dataclass
class ReweightedCurve:
    """U, chi, xi2/N of one (shape, lam) on ``grid`` (nan where not supported)."""

    shape: tuple
    lam: float
    grid: np.ndarray
    m2: list                                   # the ensembles' m2
    value: dict = field(default_factory=dict)  # observable -> (T,)
    error: dict = field(default_factory=dict)
    ess: np.ndarray | None = None              # Kish ESS of the target's group (T,)
    segments: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # [(m2_lo, m2_hi, reason)]
    reason: str = ""                           # why there is no curve at all

    @property
    def N(self) -> int:
        return int(self.shape[0])

    @property
    def supported(self) -> np.ndarray:
        return np.isfinite(self.value.get("binder", np.full(len(self.grid), np.nan)))


def _bins(ens: Ensemble, max_bins: int) -> np.ndarray:
    chain = np.asarray(ens.chain)
    if len(np.unique(chain)) >= 2:
        return (chain % max_bins).astype(np.int64)
    n = len(chain)
    nb = min(max_bins, n)
    return np.repeat(np.arange(nb), [len(c) for c in np.array_split(np.arange(n), nb)])


def _connected(a: Ensemble, b: Ensemble) -> bool:
    """Whether single-histogram reweighting of a onto b's m2 (or b onto a's) keeps ESS >= the
    threshold: the pair overlaps enough to fix their relative free energy."""
    for src, dst in ((a, b), (b, a)):
        e = np.asarray(src.phi2_sum, dtype=np.float64)
        if kish_ess(-(dst.m2 - src.m2) * DS_DM2 * e) >= default_min_ess(len(e)):
            return True
    return False


def _groups(ens: list[Ensemble]) -> list[list[int]]:
    out = [[0]]
    for k in range(1, len(ens)):
        if _connected(ens[k - 1], ens[k]):
            out[-1].append(k)
        else:
            out.append([k])
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True in ``mask``."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[idx[0]], idx[cuts + 1]])
    ends = np.concatenate([idx[cuts], [idx[-1]]])
    return list(zip(starts.tolist(), ends.tolist()))


def _estimates(mh: MultiHistogram, targets: np.ndarray, N: int) -> dict:
    obs = mh.observables(targets)
    out = {"binder": obs["binder"], "chi": obs["chi"]}
    if "xi2" in obs:
        x = obs["xi2"]
        out["xi_over_N"] = type(x)(x.value / N, x.error / N, x.replicas / N, x.bin_ensemble, x.bin_count)
    return out


def reweighted_curve(ensembles: Sequence[Ensemble], shape, lam: float, grid, *,
                     max_bins: int = MAX_BINS) -> ReweightedCurve:
    """The curves of one (shape, lam) line on the targets ``grid`` inside the ensembles' m2
    range (module docstring).  Never raises for data the reweighting refuses: the curve then
    carries the skipped ranges (or ``reason`` when nothing is left)."""
    shape = tuple(int(n) for n in shape)
    grid = np.asarray(grid, dtype=np.float64)
    ens = sorted(ensembles, key=lambda e: e.m2)
    curve = ReweightedCurve(shape, float(lam), grid, [float(e.m2) for e in ens])
    T = len(grid)
    for name in CURVE_OBSERVABLES:
        curve.value[name], curve.error[name] = np.full(T, np.nan), np.full(T, np.nan)
    curve.ess = np.full(T, np.nan)
    if len(ens) < 2:
        curve.reason = f"series at {len(ens)} m2 point(s); a curve needs >= 2"
        return curve
    lo, hi = ens[0].m2, ens[-1].m2
    inside = (grid >= lo - 1e-12) & (grid <= hi + 1e-12)
    groups = _groups(ens)
    bounds = [(ens[g[0]].m2, ens[g[-1]].m2) for g in groups]
    owner = np.full(T, -1)
    for t in np.flatnonzero(inside):
        dist = [0.0 if a <= grid[t] <= b else min(abs(grid[t] - a), abs(grid[t] - b)) for a, b in bounds]
        owner[t] = int(np.argmin(dist))
    failures = {}
    for gi, g in enumerate(groups):
        sel = np.flatnonzero(owner == gi)
        if sel.size == 0:
            continue
        members = [ens[k] for k in g]
        try:
            mh = MultiHistogram([e.m2 for e in members], [e.phi2_sum for e in members],
                                [{"m": e.m, "g2_p1": e.g2_p1} for e in members],
                                bins=[_bins(e, max_bins) for e in members], shape=shape)
        except ValueError as exc:
            for t in sel:
                failures[int(t)] = str(exc)
            continue
        ess = np.atleast_1d(mh.ess(grid[sel]))
        curve.ess[sel] = ess
        ok = ess >= mh.min_ess
        for t in sel[~ok]:
            try:
                mh.check_overlap(grid[t])
                failures[int(t)] = "refused"
            except ValueError as exc:
                support = grid[sel[ok]]
                where = (f"the data support m2 in [{support.min():.6g}, {support.max():.6g}]"
                         if support.size else "the data support no target of this range")
                msg = str(exc).split("; pass allow_extrapolation")[0]
                failures[int(t)] = f"{msg} ({where}; add m2 points in between)"
        good = sel[ok]
        if good.size == 0:
            continue
        est = _estimates(mh, grid[good], shape[0])
        curve.segments.append(Segment([e.m2 for e in members], mh, good, est))
        for name, e in est.items():
            curve.value[name][good], curve.error[name][good] = e.value, e.error
    for a, b in _runs(inside & ~curve.supported):
        why = failures.get(a, "not evaluated")
        if owner[b] != owner[a]:  # a gap between two groups: both edges' refusals
            why += "; and " + failures.get(b, "not evaluated")
        curve.skipped.append((float(grid[a]), float(grid[b]), why))
    if not curve.segments:
        curve.reason = "no supported target: " + "; ".join(r for _, _, r in curve.skipped)
    return curve


@dataclass
class CurveCrossing:
    """The crossing of two sizes' reweighted curves (``reason`` "" when found)."""

    N_a: int
    N_b: int
    observable: str
    m2: float = math.nan
    dm2: float = math.nan
    value: float = math.nan
    dvalue: float = math.nan
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == "" and math.isfinite(self.m2)


def _best_split(D: np.ndarray, sD: np.ndarray) -> int | None:
    """Index j of the sign change D_j -> D_{j+1} to use (None: no sign change)."""
    changes = np.flatnonzero(D[:-1] * D[1:] <= 0)
    if changes.size == 0:
        return None
    if changes.size == 1:
        return int(changes[0])
    z = D / np.where(sD > 0, sD, 1.0)
    best, score = int(changes[0]), -1.0
    for j in changes:
        left, right = z[: j + 1].sum(), z[j + 1:].sum()
        s = abs(left - right) if left * right < 0 else -1.0
        if s > score:
            best, score = int(j), s
    return best


def _local(seg_a: Segment, seg_b: Segment, targets: np.ndarray, N_a: int, N_b: int, obs: str):
    try:
        return _estimates(seg_a.mh, targets, N_a)[obs], _estimates(seg_b.mh, targets, N_b)[obs]
    except ValueError:
        return None


def curve_crossing(a: ReweightedCurve, b: ReweightedCurve, observable: str = "binder", *,
                   n_local: int = N_LOCAL) -> CurveCrossing:
    """Crossing of ``observable`` (binder or xi_over_N) of the curves of sizes a < b (same
    grid and lam), with its jackknife error (module docstring)."""
    out = CurveCrossing(a.N, b.N, observable)
    if a.reason or b.reason:
        out.reason = f"no curve for N = {a.N if a.reason else b.N}"
        return out
    if not np.array_equal(a.grid, b.grid):
        raise ValueError("the two curves must share their m2 grid")
    best = None
    for sa in a.segments:
        for sb in b.segments:
            if observable not in sa.estimates or observable not in sb.estimates:
                continue
            common = np.intersect1d(sa.index, sb.index)
            for s, e in _runs(np.isin(np.arange(len(a.grid)), common)):
                idx = np.arange(s, e + 1)
                if idx.size < 2:
                    continue
                ia, ib = np.searchsorted(sa.index, idx), np.searchsorted(sb.index, idx)
                ya, yb = sa.estimates[observable], sb.estimates[observable]
                D = yb.value[ib] - ya.value[ia]
                sD = np.hypot(ya.error[ia], yb.error[ib])
                j = _best_split(D, sD)
                if j is not None and (best is None or idx.size > best[3].size):
                    best = (sa, sb, j, idx)
    if best is None:
        out.reason = "the curves do not cross where both are supported"
        return out
    sa, sb, j, idx = best
    g = a.grid
    k_lo, k_hi = idx[max(j - LOCAL_STEPS, 0)], idx[min(j + 1 + LOCAL_STEPS, idx.size - 1)]
    targets = np.linspace(g[k_lo], g[k_hi], n_local)
    local = _local(sa, sb, targets, a.N, b.N, observable)
    if local is None:  # the local grid was refused: the bracket's own two targets
        targets = g[idx[j:j + 2]]
        local = (_estimates(sa.mh, targets, a.N)[observable],
                 _estimates(sb.mh, targets, b.N)[observable])
    ea, eb = local
    x0, y0 = _roots_on_grid(targets, ea.value[None], eb.value[None], 0.5 * (g[idx[j]] + g[idx[j + 1]]))
    if not np.isfinite(x0[0]):
        out.reason = "no sign change on the local grid"
        return out
    x0, y0 = float(x0[0]), float(y0[0])
    out.m2, out.value = x0, y0
    # replica roots: on the local grid, else on the curves' common supported targets
    ca, cb = sa.estimates[observable], sb.estimates[observable]
    ia, ib = np.searchsorted(sa.index, idx), np.searchsorted(sb.index, idx)
    roots = []
    for fine, coarse in (((ea.replicas, np.broadcast_to(eb.value, ea.replicas.shape)),
                          (ca.replicas[:, ia], np.broadcast_to(cb.value[ib], (len(ca.replicas), idx.size)))),
                         ((np.broadcast_to(ea.value, eb.replicas.shape), eb.replicas),
                          (np.broadcast_to(ca.value[ia], (len(cb.replicas), idx.size)), cb.replicas[:, ib]))):
        xr, yr = _roots_on_grid(targets, *fine, x0)
        xc, yc = _roots_on_grid(g[idx], *coarse, x0)
        miss = ~np.isfinite(xr)
        xr[miss], yr[miss] = xc[miss], yc[miss]
        roots.append((xr, yr))
    xr, yr = np.concatenate([roots[0][0], roots[1][0]]), np.concatenate([roots[0][1], roots[1][1]])
    if not (np.all(np.isfinite(xr)) and np.all(np.isfinite(yr))):
        out.reason = (f"the crossing at m2 = {x0:.6g} is not stable: {int(np.sum(~np.isfinite(xr)))} "
                      f"of {len(xr)} jackknife replicas have no crossing where both curves are "
                      "supported")
        return out
    strata = np.concatenate([ea.bin_ensemble, eb.bin_ensemble + int(ea.bin_ensemble.max()) + 1])
    counts = np.concatenate([ea.bin_count, eb.bin_count])
    out.dm2 = float(jackknife_error(x0, xr[:, None], strata, counts)[()])
    out.dvalue = float(jackknife_error(y0, yr[:, None], strata, counts)[()])
    return out
