"""Reweighting of HMC data in m2: single and multi-histogram (Ferrenberg-Swendsen), numpy only.

The action (rgdist.lattice.action) is linear in m2, S[phi; m2] = S[phi; m2_0] + (m2 - m2_0) E/2
with E = sum_x phi_x^2, so configurations drawn at m2_0 (same lam, same lattice) reweight
exactly to any m2; only the statistics limit the reach (it shrinks like 1/sqrt(V)).

The public API of the reweighting; the parts live by role in
  * :mod:`~rgdist.analysis.reweight_core`: weights, overlap (Kish ESS) test, :func:`single_histogram`;
  * :mod:`~rgdist.analysis.reweight_mbar`: the multi-histogram equations and the overlap matrix;
  * :mod:`~rgdist.analysis.reweight_errors`: the stratified jackknife and :class:`Estimate`;
  * :mod:`~rgdist.analysis.reweight_observables`: :func:`config_data`, :func:`derived_observables`;
and here :class:`MultiHistogram`, which combines K ensembles: with the free energies f_k of the
ensembles solved (reweight_mbar), the weight of pooled configuration n at any target m2 is

    log w_n(m2) = log c_n - (m2 - m2_ref) E_n / 2 - log D_n,      f(m2) = -log sum_n w_n(m2),

<O>(m2) = sum_n w_n O_n / sum_n w_n, c_n = 1/g_k (statistical inefficiency g_k = max(1,
2 tau_k); 1 for thinned, independent configurations).  Equal g_k cancel.  Errors: every
jackknife replica deletes one bin of one ensemble and re-solves the f_k (reweight_errors), so
they include the reweighting.  Targets whose ESS is below ``min_ess`` are refused (ValueError
naming the target and its ESS) unless ``allow_extrapolation=True``.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from rgdist.analysis.reweight_core import (
    DS_DM2,
    MIN_ESS_ABS,
    MIN_ESS_FRAC,
    check_overlap,
    default_min_ess,
    finite_float,
    kish_ess,
    per_config,
    phi2_sums,
    resolve_min_ess,
    single_histogram,
    target_array,
)
from rgdist.analysis.reweight_errors import Estimate, jackknife_error
from rgdist.analysis.reweight_mbar import overlap_matrix, solve_free_energies
from rgdist.analysis.reweight_observables import config_data, derived_observables, lowest_momenta

__all__ = [
    "DS_DM2", "MIN_ESS_ABS", "MIN_ESS_FRAC", "Estimate", "MultiHistogram", "config_data",
    "default_min_ess", "derived_observables", "kish_ess", "single_histogram",
]


class MultiHistogram:
    """Ferrenberg-Swendsen / MBAR reweighting in m2 of K ensembles (same lam, same lattice).

    Args:
        m2: the K distinct m2_k the ensembles were drawn at.
        phi2_sum: K arrays, E = sum_x phi_x^2 per configuration (``(N_k,)``, float64).
        data: K dicts of per-configuration arrays ``(N_k, ...)`` with the same keys and
            trailing shapes (e.g. from :func:`config_data`); :meth:`observables` needs ``m``
            (M per configuration) and, for xi2, ``g2_p1`` ``(N_k, d)`` or ``g2``
            ``(N_k, *shape)``; :meth:`g2` needs ``g2``.
        bins: K integer arrays ``(N_k,)`` of jackknife bin labels (e.g. the chain index), or
            None for ``n_bins`` contiguous blocks per ensemble (np.array_split order).
        n_bins: blocks per ensemble when ``bins`` is None (at most N_k; >= 2 needed).
        tau_int: None (independent configurations: g_k = 1) or K integrated autocorrelation
            times (white noise 1/2); g_k = max(1, 2 tau_k) enters the effective counts.
        shape: the lattice shape (needed for chi etc.; taken from ``data['g2']`` if absent).
        min_ess: overlap threshold on the Kish ESS (default :func:`default_min_ess` of N).
        tol: convergence of the free energies (max relative violation of the equations).
        max_iter: iteration limit of the solver.
    """

    def __init__(self, m2: Sequence[float], phi2_sum: Sequence, data: Sequence[Mapping] | None = None,
                 *, bins: Sequence | None = None, n_bins: int = 20, tau_int: Sequence | None = None,
                 shape: Sequence[int] | None = None, min_ess=None, tol: float = 1e-11,
                 max_iter: int = 500):
        if isinstance(m2, (str, bytes)) or not hasattr(m2, "__len__") or len(m2) < 1:
            raise ValueError(f"m2 must be a non-empty sequence of the ensembles' m2, got {m2!r}")
        self.m2 = np.array([finite_float(f"m2[{k}]", v) for k, v in enumerate(m2)])
        K = self.n_ensembles = len(self.m2)
        if len(np.unique(self.m2)) != K:
            raise ValueError(f"m2 has duplicate values {self.m2.tolist()}; merge ensembles "
                             "drawn at the same m2 into one")
        if isinstance(phi2_sum, np.ndarray) and phi2_sum.ndim == 1 and K == 1:
            phi2_sum = [phi2_sum]
        if not hasattr(phi2_sum, "__len__") or len(phi2_sum) != K:
            raise ValueError(f"phi2_sum must hold one array per ensemble ({K})")
        E = [phi2_sums(f"phi2_sum[{k}]", e) for k, e in enumerate(phi2_sum)]
        self.counts = np.array([len(e) for e in E])
        if np.any(self.counts < 2):
            raise ValueError(f"every ensemble needs >= 2 configurations, got counts "
                             f"{self.counts.tolist()}")
        # ---- data
        if data is None:
            data = [{} for _ in range(K)]
        if isinstance(data, Mapping) and K == 1:
            data = [data]
        if not hasattr(data, "__len__") or len(data) != K or not all(isinstance(d, Mapping) for d in data):
            raise ValueError(f"data must hold one dict of per-configuration arrays per ensemble ({K})")
        keys = set(data[0])
        for k, d in enumerate(data):
            if set(d) != keys:
                raise ValueError(f"data[{k}] has keys {sorted(d)}, data[0] has {sorted(keys)}")
        pooled = {}
        for key in sorted(keys):
            arrs = [per_config(f"data[{k}][{key!r}]", d[key], self.counts[k]) for k, d in enumerate(data)]
            if len({a.shape[1:] for a in arrs}) != 1:
                raise ValueError(f"data[*][{key!r}] must share the trailing shape, got "
                                 f"{[a.shape[1:] for a in arrs]}")
            pooled[key] = np.concatenate(arrs)
        self._data = pooled
        # ---- lattice shape
        if shape is None and "g2" in pooled:
            shape = pooled["g2"].shape[1:]
        if shape is not None:
            shape = tuple(shape)
            if len(shape) < 1 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                                         and n >= 2 for n in shape):
                raise ValueError(f"shape must be a tuple of integers >= 2, got {shape!r}")
            shape = tuple(int(n) for n in shape)
            if "g2" in pooled and pooled["g2"].shape[1:] != shape:
                raise ValueError(f"data['g2'] has trailing shape {pooled['g2'].shape[1:]}, "
                                 f"shape is {shape}")
            if "g2_p1" in pooled and pooled["g2_p1"].shape[1:] != (len(shape),):
                raise ValueError(f"data['g2_p1'] must have shape (N_k, {len(shape)}), got "
                                 f"trailing shape {pooled['g2_p1'].shape[1:]}")
        self.shape = shape
        # ---- bins
        labels = []
        if bins is None:
            if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
                raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
            for n in self.counts:
                nb = min(int(n_bins), int(n))
                labels.append(np.repeat(np.arange(nb), [len(c) for c in np.array_split(np.arange(n), nb)]))
        else:
            if not hasattr(bins, "__len__") or len(bins) != K:
                raise ValueError(f"bins must hold one label array per ensemble ({K})")
            for k, b in enumerate(bins):
                b = np.asarray(b)
                if b.shape != (self.counts[k],) or not np.issubdtype(b.dtype, np.integer):
                    raise ValueError(f"bins[{k}] must be an integer array of shape "
                                     f"({self.counts[k]},), got {b.dtype} {b.shape}")
                _, inv = np.unique(b, return_inverse=True)
                labels.append(inv.reshape(-1))
        offsets = np.cumsum([0] + [int(lab.max()) + 1 for lab in labels])
        for k, lab in enumerate(labels):
            if lab.max() + 1 < 2:
                raise ValueError(f"ensemble {k} (m2 = {self.m2[k]:.6g}) has fewer than 2 jackknife "
                                 "bins; errors need >= 2")
        self._bin = np.concatenate([lab + offsets[k] for k, lab in enumerate(labels)])
        self.bin_ensemble = np.concatenate([np.full(int(lab.max()) + 1, k) for k, lab in enumerate(labels)])
        self.bin_count = np.bincount(self._bin)
        # ---- effective counts
        if tau_int is None:
            self.g = np.ones(K)
        else:
            if not hasattr(tau_int, "__len__") or len(tau_int) != K:
                raise ValueError(f"tau_int must hold one value per ensemble ({K})")
            tau = np.array([finite_float(f"tau_int[{k}]", t) for k, t in enumerate(tau_int)])
            if np.any(tau <= 0):
                raise ValueError(f"tau_int must be > 0 (white noise: 0.5), got {tau.tolist()}")
            self.g = np.maximum(1.0, 2.0 * tau)
        self._E = np.concatenate(E)
        self._ens = np.repeat(np.arange(K), self.counts)
        self.n_total = int(self.counts.sum())
        self.min_ess = resolve_min_ess(min_ess, self.n_total)
        self._m2_ref = float(np.mean(self.m2))
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        self.tol, self.max_iter = finite_float("tol", tol), int(max_iter)
        if self.tol <= 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        self._all = np.ones(self.n_total, dtype=bool)
        self.f, self._logD, self.n_iter = self._solve(self._all, np.zeros(K))

    def __repr__(self) -> str:
        return (f"MultiHistogram(m2={self.m2.tolist()}, counts={self.counts.tolist()}, "
                f"f={np.round(self.f, 6).tolist()})")

    # ------------------------------------------------------------------ the solve
    def _du(self, m2) -> np.ndarray:
        return (np.asarray(m2, dtype=np.float64) - self._m2_ref) * DS_DM2

    def _solve(self, keep: np.ndarray, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Free energies (f[0] = 0), log D_n and the step count on the configurations ``keep``."""
        return solve_free_energies(self._E[keep], self._ens[keep], self._du(self.m2), self.g, f0,
                                   self.tol, self.max_iter, f" (ensembles at m2 = {self.m2.tolist()})")

    def _log_weights(self, targets: np.ndarray, keep: np.ndarray, log_d: np.ndarray) -> np.ndarray:
        """Unnormalized log w_n(m2_t), shape (T, n)."""
        E, ens = self._E[keep], self._ens[keep]
        return -np.log(self.g[ens])[None, :] - self._du(targets)[:, None] * E[None, :] - log_d[None, :]

    # ------------------------------------------------------------------ overlap
    def ess(self, m2) -> np.ndarray:
        """Kish effective sample size of the target weights at each m2 (configurations)."""
        targets, scalar = target_array(m2)
        out = kish_ess(self._log_weights(targets, self._all, self._logD), axis=1)
        return float(out[0]) if scalar else out

    def check_overlap(self, m2, allow_extrapolation: bool = False) -> None:
        """ValueError naming the first target whose ESS is below ``min_ess``."""
        targets, _ = target_array(m2)
        check_overlap(targets, np.atleast_1d(self.ess(targets)), self.min_ess, self.n_total,
                       f"ensembles at m2 = {[float(f'{v:.6g}') for v in self.m2]}",
                       allow_extrapolation)

    def overlap(self) -> np.ndarray:
        """The ensembles' overlap matrix O (K, K), rows summing to 1 (rgdist.analysis.reweight_mbar):
        O_kk near 1 with small off-diagonal neighbours means ensemble k barely overlaps the
        others, and the free energies across that gap are not determined by the data."""
        return overlap_matrix(self._E, self._ens, self._du(self.m2), self.g, self.f, self._logD)

    # ------------------------------------------------------------------ estimates
    def _evaluate(self, targets, keep, f0, columns):
        """(f_k, f(m2_t), {key: reweighted mean (T, ...)}) on the configurations ``keep``."""
        if keep is self._all:
            f, log_d = self.f, self._logD
        else:
            f, log_d, _ = self._solve(keep, f0)
        lw = self._log_weights(targets, keep, log_d)
        top = np.max(lw, axis=1, keepdims=True)  # logsumexp, its exponentials kept as w
        top = np.where(np.isfinite(top), top, 0.0)
        w = np.exp(lw - top, out=lw)
        total = np.sum(w, axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            w /= total
            lz = (np.log(total) + top)[:, 0]
        means = {}
        for key, col in columns.items():
            x = col[keep]
            means[key] = (w @ x.reshape(x.shape[0], -1)).reshape((targets.size,) + x.shape[1:])
        return f, -lz, means

    def means(self, m2, keys: Sequence[str] | None = None, *, allow_extrapolation: bool = False) -> dict:
        """Reweighted <O>(m2) of the data arrays ``keys`` (default all), no errors."""
        targets, scalar = target_array(m2)
        self.check_overlap(targets, allow_extrapolation)
        cols = self._columns(keys)
        _, _, means = self._evaluate(targets, self._all, self.f, cols)
        return {k: v[0] for k, v in means.items()} if scalar else means

    def _columns(self, keys) -> dict:
        if keys is None:
            return dict(self._data)
        if isinstance(keys, str):
            keys = [keys]
        missing = [k for k in keys if k not in self._data]
        if missing:
            raise ValueError(f"data lacks {missing}; it has {sorted(self._data)}")
        return {k: self._data[k] for k in keys}

    def _jackknife(self, fn: Callable, targets, columns, scalar: bool):
        """Plug-in value and replicas of fn(f_k, f_targets, means); Estimate(s)."""
        f, ft, means = self._evaluate(targets, self._all, self.f, columns)
        theta = fn(f, ft, means)
        bare = not isinstance(theta, Mapping)
        theta = {"_": theta} if bare else dict(theta)
        theta = {k: np.asarray(v, dtype=np.float64) for k, v in theta.items()}
        reps = {k: [] for k in theta}
        for b in range(len(self.bin_count)):
            keep = self._bin != b
            out = fn(*self._evaluate(targets, keep, self.f, columns))
            out = {"_": out} if bare else out
            for k in theta:
                reps[k].append(np.asarray(out[k], dtype=np.float64))
        result = {}
        for k, value in theta.items():
            r = np.stack(reps[k])
            err = jackknife_error(value, r, self.bin_ensemble, self.bin_count)
            if scalar and value.ndim >= 1 and value.shape[0] == targets.size:
                value, err, r = value[0], err[0], r[:, 0]
            result[k] = Estimate(value, err, r, self.bin_ensemble, self.bin_count)
        return result["_"] if bare else result

    def estimate(self, fn: Callable, m2, keys: Sequence[str] | None = None, *,
                 allow_extrapolation: bool = False):
        """Jackknifed fn(means) at the targets, the f_k re-solved in every replica.

        ``fn`` receives a dict {key: <O>(m2_t)} with a leading target axis (T, ...) and returns
        an array (or a dict of arrays) whose leading axis is the target axis; a scalar m2
        drops that axis from the result.  Returns an :class:`Estimate` (or a dict of them).
        """
        targets, scalar = target_array(m2)
        self.check_overlap(targets, allow_extrapolation)
        cols = self._columns(keys)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._jackknife(lambda f, ft, means: fn(means), targets, cols, scalar)

    def free_energies(self) -> Estimate:
        """f_k - f_0 = -log(Z_k / Z_0) of the ensembles, shape (K,), jackknifed."""
        est = self._jackknife(lambda f, ft, means: f, self.m2[:1], {}, False)
        return est

    def free_energy(self, m2, *, allow_extrapolation: bool = False) -> Estimate:
        """f(m2) - f_0 = -log(Z(m2) / Z(m2_0)) at the targets, jackknifed."""
        targets, scalar = target_array(m2)
        self.check_overlap(targets, allow_extrapolation)
        return self._jackknife(lambda f, ft, means: ft, targets, {}, scalar)

    def _moment_columns(self) -> dict:
        if "m" not in self._data:
            raise ValueError("observables need data['m'] (the magnetization M per configuration)")
        if self.shape is None:
            raise ValueError("observables need the lattice shape: pass shape=... (or data['g2'])")
        m = self._data["m"]
        if m.ndim != 1:
            raise ValueError(f"data['m'] must have shape (N_k,), got trailing shape {m.shape[1:]}")
        cols = {"m": m, "abs_m": np.abs(m), "m2": m * m, "m4": (m * m) ** 2}
        if "g2_p1" in self._data:
            cols["g2_p1"] = self._data["g2_p1"]
        elif "g2" in self._data:
            cols["g2_p1"] = lowest_momenta(self._data["g2"], len(self.shape))
        return cols

    def observables(self, m2, *, allow_extrapolation: bool = False) -> dict[str, Estimate]:
        """The rgdist.measure observables as curves over the target m2 (jackknifed).

        Keys: m, abs_m, m2 (= <M^2>), m4, chi, chi_conn, binder and, when G2 at the lowest
        momenta is available, g2_p1, xi2, m_R, lambda_R, Z.
        """
        targets, scalar = target_array(m2)
        self.check_overlap(targets, allow_extrapolation)
        cols = self._moment_columns()
        shape = self.shape
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._jackknife(lambda f, ft, means: derived_observables(means, shape),
                                   targets, cols, scalar)

    def g2(self, m2, *, allow_extrapolation: bool = False) -> Estimate:
        """Reweighted G2(p) = <|phi~(p)|^2>/V at the targets, shape (T, *shape) (fftn order)."""
        targets, scalar = target_array(m2)
        self.check_overlap(targets, allow_extrapolation)
        cols = self._columns(["g2"])
        return self._jackknife(lambda f, ft, means: means["g2"], targets, cols, scalar)
