"""Per-configuration inputs of the m2 reweighting and the observables derived from reweighted
means (numpy only; the formulas of rgdist.measure.observables, repeated here so that the
analysis core stays torch-free).

Per configuration: E = sum_x phi_x^2, M = (1/V) sum_x phi_x and G2(p) = |phi~(p)|^2 / V with
phi~(p) = sum_x exp(-i p.x) phi_x.  From the means: chi = V <M^2>, chi_conn = V (<M^2> -
<|M|>^2), U = 1 - <M^4>/(3 <M^2>^2), xi2^2 = (G2(0)/G2(p1) - 1)/(4 sin^2(pi/N)) with G2(0) =
V <M^2> and G2(p1) averaged over the d lowest momenta first (equal sides; unequal sides average
the d per-axis estimates), m_R = 1/xi2, lambda_R = (3 - <M^4>/<M^2>^2) V / xi2^d and
Z = m_R^2 G2(0).  Names as in rgdist.measure.observables.ensemble_observables (``m2`` there is
<M^2>, not the coupling).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["config_data", "derived_observables", "lowest_momenta"]


def lowest_momenta(power: np.ndarray, d: int) -> np.ndarray:
    """G2 at p1 = 2 pi e_mu / N_mu for each axis mu from ``power`` ``(B, *shape)`` (fftn
    order): shape ``(B, d)``."""
    return np.stack([power[(slice(None),) + tuple(int(i == mu) for i in range(d))]
                     for mu in range(d)], axis=1)


def config_data(phi, *, full_g2: bool = False) -> dict[str, np.ndarray]:
    """Per-configuration reweighting inputs from fields ``(B, *shape)`` (numpy, float64).

    Returns ``phi2_sum`` = E ``(B,)``, ``m`` = M ``(B,)`` and ``g2_p1`` ``(B, d)`` (G2 at the
    lowest momentum of each axis); with ``full_g2`` also ``g2`` ``(B, *shape)`` = G2(p) in
    ``fftn`` order.
    """
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim < 2:
        raise ValueError(f"phi must have shape (batch, *lattice_shape), got {phi.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("phi must be finite")
    shape = phi.shape[1:]
    axes = tuple(range(1, phi.ndim))
    volume = math.prod(shape)
    out = {"phi2_sum": np.sum(phi * phi, axis=axes), "m": phi.reshape(phi.shape[0], -1).mean(1)}
    if full_g2:
        out["g2"] = np.abs(np.fft.fftn(phi, axes=axes)) ** 2 / volume
        out["g2_p1"] = lowest_momenta(out["g2"], len(shape))
        return out
    # without the full spectrum: phi~(p1_mu) is the DFT at k = 1 of the field summed over the
    # other axes (O(V) per axis instead of a full FFT)
    g2_p1 = []
    for mu, n_mu in enumerate(shape):
        proj = phi.sum(axis=tuple(a for a in axes if a != mu + 1))           # (B, N_mu)
        g2_p1.append(np.abs(proj @ np.exp(-2j * np.pi * np.arange(n_mu) / n_mu)) ** 2 / volume)
    out["g2_p1"] = np.stack(g2_p1, axis=1)
    return out


def derived_observables(means: Mapping[str, np.ndarray], shape: Sequence[int]) -> dict:
    """rgdist.measure.observables.ensemble_observables from reweighted means, torch-free.

    ``means``: <M>, <|M|>, <M^2>, <M^4> under ``m, abs_m, m2, m4`` (any common shape ``S``)
    and optionally <G2(p1_mu)> under ``g2_p1`` (shape ``S + (d,)``).  Returns those plus
    ``chi, chi_conn, binder`` and, with ``g2_p1``, ``xi2, m_R, lambda_R, Z`` (nan where xi2^2
    is not finite and > 0).
    """
    shape = tuple(int(n) for n in shape)
    d, volume = len(shape), math.prod(shape)
    m2 = np.asarray(means["m2"], dtype=np.float64)
    m4 = np.asarray(means["m4"], dtype=np.float64)
    abs_m = np.asarray(means["abs_m"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = {"m": np.asarray(means["m"], dtype=np.float64), "abs_m": abs_m, "m2": m2, "m4": m4,
               "chi": volume * m2, "chi_conn": volume * (m2 - abs_m ** 2),
               "binder": 1.0 - m4 / (3.0 * m2 ** 2)}
        if "g2_p1" not in means:
            return out
        gp = np.asarray(means["g2_p1"], dtype=np.float64)
        g0 = volume * m2
        if len(set(shape)) == 1:
            xi2sq = (g0 / gp.mean(-1) - 1.0) / (4.0 * math.sin(math.pi / shape[0]) ** 2)
        else:
            xi2sq = sum((g0 / gp[..., mu] - 1.0) / (4.0 * math.sin(math.pi / n) ** 2)
                        for mu, n in enumerate(shape)) / d
        xi2 = np.sqrt(np.where(np.isfinite(xi2sq) & (xi2sq > 0), xi2sq, np.nan))
        m_r = 1.0 / xi2
        out.update(g2_p1=gp, xi2=xi2, m_R=m_r, lambda_R=(3.0 - m4 / m2 ** 2) * volume / xi2 ** d,
                   Z=m_r ** 2 * g0)
    return out
