"""Stratified delete-one-bin jackknife of the m2 reweighting (numpy only).

Each ensemble's configurations are split into independent bins (the chain index, or blocks
much longer than tau_int); every replica deletes one bin of one ensemble, re-solves the free
energies from what is left and recomputes the weights and the derived quantities, so the
errors include the reweighting.  With theta the full (plug-in) estimate and theta_b the
replicas of ensemble k (B_k bins of n_b configurations, h_b = N_k / n_b), the delete-m_j
jackknife of Busing, Meijer & van der Leeden (as rgdist.measure.stats) is summed over the
independent ensembles:

    t_b = h_b theta - (h_b - 1) theta_b,   theta_k = B_k theta - sum_b (1 - n_b/N_k) theta_b,
    var = sum_k (1/B_k) sum_{b in k} (t_b - theta_k)^2 / (h_b - 1)

(equal bins: var = sum_k (B_k - 1)/B_k sum_b (theta_b - mean_k theta_b)^2; for a plain mean
with unequal bins it is the exact sum_b n_b (xbar_b - xbar)^2 / (B (N - n_b))).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "jackknife_error"]


def _deviations(value, replicas, bin_ensemble, bin_count) -> tuple[np.ndarray, np.ndarray]:
    """Centred pseudo-values t_b - theta_k, shape (bins, P), and the factors 1/(B_k (h_b - 1))."""
    val = np.asarray(value, dtype=np.float64).reshape(-1)
    reps = np.asarray(replicas, dtype=np.float64).reshape(len(bin_count), -1)
    bin_ensemble = np.asarray(bin_ensemble)
    dev = np.empty_like(reps)
    fac = np.empty(len(bin_count))
    for k in np.unique(bin_ensemble):
        sel = bin_ensemble == k
        nb = np.asarray(bin_count, dtype=np.float64)[sel]
        h = nb.sum() / nb
        n_bins = int(sel.sum())
        theta_k = n_bins * val - np.sum((1.0 - nb / nb.sum())[:, None] * reps[sel], axis=0)
        dev[sel] = h[:, None] * val[None] - (h - 1.0)[:, None] * reps[sel] - theta_k[None]
        fac[sel] = 1.0 / (n_bins * (h - 1.0))
    return dev, fac


def jackknife_error(value, replicas, bin_ensemble, bin_count) -> np.ndarray:
    """Stratified jackknife error of ``value`` from its ``replicas`` (leading axis: bins)."""
    dev, fac = _deviations(value, replicas, bin_ensemble, bin_count)
    return np.sqrt(np.sum(fac[:, None] * dev ** 2, axis=0)).reshape(np.shape(value))


@dataclass
class Estimate:
    """A jackknifed estimate: ``value`` (plug-in), ``error``, and the jackknife ``replicas``
    (leading axis: one per deleted bin) with their bins' ensembles and sizes.  Unpacks as
    ``value, error = est``."""

    value: np.ndarray
    error: np.ndarray
    replicas: np.ndarray
    bin_ensemble: np.ndarray
    bin_count: np.ndarray

    def __iter__(self):
        return iter((self.value, self.error))

    def covariance(self) -> np.ndarray:
        """Stratified jackknife covariance of the flattened value, shape ``(P, P)``."""
        dev, fac = _deviations(self.value, self.replicas, self.bin_ensemble, self.bin_count)
        return (dev * fac[:, None]).T @ dev
