"""Observables of lattice phi^4 (SPEC section 3).

Per configuration (torch, batched ``phi`` of shape ``(B, *lattice.shape)``):

    M        = (1/V) sum_x phi_x                              magnetization(phi)
    G2(p)    = |phi~(p)|^2 / V   (G2 units; G2(0) = V M^2)    two_point(phi, lattice)
    max|phi| = max_x |phi_x|                                  max_abs(phi)

Ensemble formulas (numpy, pure functions of averaged moments <.>; they broadcast over any
leading axes, so the jackknife evaluates them on all replicas at once):

    chi      = V <M^2>                               susceptibility
    chi_conn = V (<M^2> - <|M|>^2)                   connected_susceptibility
    U        = 1 - <M^4> / (3 <M^2>^2)               binder_cumulant
    xi2^2    = (G2(0)/G2(p1) - 1) / (4 sin^2(pi/N))  xi2_squared / correlation_length
    m_R      = 1 / xi2                               renormalized_mass
    lambda_R = (3 - <M^4>/<M^2>^2) V / xi2^d         renormalized_coupling ((N/xi2)^d if cubic)
    Z        = m_R^2 G2(0),  G2(0) = V <M^2>         field_renormalization

xi2 uses p1 = (2 pi/N, 0, ...) and its d-1 rotations.  On a lattice with equal sides the
d values G2(p1) are averaged first (SPEC); with unequal sides each axis mu gives its own
estimate (G2(0)/G2(p1_mu) - 1)/(4 sin^2(pi/N_mu)) and these d estimates are averaged.
For the free propagator G2 = 1/(phat^2 + m2) both give xi2^2 = 1/m2 exactly.
When xi2^2 is not finite and > 0 (noise, or no signal), xi2, m_R, lambda_R and Z are nan.
Everything is in lattice units; :func:`to_physical_mass` converts m_R.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from rgdist.lattice.geometry import Lattice


# --- per configuration (torch) -----------------------------------------------------
def _check_batch(phi) -> torch.Tensor:
    if not isinstance(phi, torch.Tensor):
        raise ValueError(f"phi must be a torch.Tensor, got {type(phi).__name__}")
    if phi.dim() < 2:
        raise ValueError(f"phi must have shape (batch, *lattice.shape), got {tuple(phi.shape)}")
    return phi


def magnetization(phi: torch.Tensor) -> torch.Tensor:
    """M = (1/V) sum_x phi_x for each configuration: shape ``(B,)``."""
    return _check_batch(phi).flatten(1).mean(dim=1)


def max_abs(phi: torch.Tensor) -> torch.Tensor:
    """max_x |phi_x| for each configuration: shape ``(B,)``."""
    return _check_batch(phi).flatten(1).abs().amax(dim=1)


def two_point(phi: torch.Tensor, lattice: Lattice) -> torch.Tensor:
    """G2(p) = |phi~(p)|^2 / V for each configuration: shape ``(B, *lattice.shape)`` (real).

    Indexed like ``torch.fft.fftn``: entry n is p = 2 pi n / N.  sum_p G2(p) = sum_x phi_x^2.
    """
    lattice.check_field(phi)
    return lattice.fft(phi).abs().square() / lattice.volume


# --- ensemble formulas (numpy) ------------------------------------------------------
def susceptibility(m2, volume: int):
    """chi = V <M^2>."""
    return volume * np.asarray(m2, dtype=np.float64)


def connected_susceptibility(m2, abs_m, volume: int):
    """chi_conn = V (<M^2> - <|M|>^2)."""
    return volume * (np.asarray(m2, dtype=np.float64) - np.asarray(abs_m, dtype=np.float64) ** 2)


def binder_cumulant(m2, m4):
    """U = 1 - <M^4> / (3 <M^2>^2): 0 for Gaussian M, 2/3 for M = +-const."""
    m2 = np.asarray(m2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - np.asarray(m4, dtype=np.float64) / (3.0 * m2 ** 2)


def xi2_squared(g2, lattice: Lattice):
    """Second-moment xi2^2 from the averaged G2 array ``(..., *lattice.shape)``.

    Returns shape ``(...)``; nan where the result is not finite and > 0.
    """
    g2 = np.asarray(g2, dtype=np.float64)
    if g2.shape[g2.ndim - lattice.d:] != lattice.shape:
        raise ValueError(f"g2 must end with the lattice shape {lattice.shape}, got {g2.shape}")
    g0 = g2[(Ellipsis,) + (0,) * lattice.d]
    g_p1 = [g2[(Ellipsis,) + idx] for idx in lattice.lowest_momentum_indices()]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if len(set(lattice.shape)) == 1:
            s2 = 4.0 * math.sin(math.pi / lattice.shape[0]) ** 2
            out = (g0 / (sum(g_p1) / lattice.d) - 1.0) / s2
        else:
            out = sum((g0 / gp - 1.0) / (4.0 * math.sin(math.pi / n) ** 2)
                      for gp, n in zip(g_p1, lattice.shape)) / lattice.d
    out = np.asarray(out, dtype=np.float64)
    return np.where(np.isfinite(out) & (out > 0), out, np.nan)


def correlation_length(g2, lattice: Lattice):
    """xi2 = sqrt(xi2^2) (nan when xi2^2 is not finite and > 0)."""
    return np.sqrt(xi2_squared(g2, lattice))


def renormalized_mass(xi2):
    """m_R = 1 / xi2 (lattice units)."""
    with np.errstate(divide="ignore"):
        return 1.0 / np.asarray(xi2, dtype=np.float64)


def renormalized_coupling(m2, m4, xi2, lattice: Lattice):
    """lambda_R = (3 - <M^4>/<M^2>^2) V / xi2^d  (= (N/xi2)^d on a cubic lattice)."""
    m2 = np.asarray(m2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (3.0 - np.asarray(m4, dtype=np.float64) / m2 ** 2) * lattice.volume \
            / np.asarray(xi2, dtype=np.float64) ** lattice.d


def field_renormalization(m_r, g2_zero):
    """Z = m_R^2 G2(0)."""
    return np.asarray(m_r, dtype=np.float64) ** 2 * np.asarray(g2_zero, dtype=np.float64)


def to_physical_mass(m_r, N: int, L_phys: float):
    """m_R in units of 1/L_phys:  m_R * N / L_phys  (lattice spacing a = L_phys / N)."""
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be an integer >= 1, got {N!r}")
    if isinstance(L_phys, bool) or not isinstance(L_phys, (int, float, np.floating)) \
            or not (math.isfinite(L_phys) and L_phys > 0):
        raise ValueError(f"L_phys must be a finite number > 0, got {L_phys!r}")
    return np.asarray(m_r, dtype=np.float64) * N / L_phys


MOMENT_KEYS = ("m", "abs_m", "m2", "m4", "g2")


def ensemble_observables(means: Mapping[str, np.ndarray], lattice: Lattice) -> dict[str, np.ndarray]:
    """All derived observables from averaged moments.

    ``means`` holds <M>, <|M|>, <M^2>, <M^4> under ``m, abs_m, m2, m4`` (shape ``(...)``) and
    <G2(p)> under ``g2`` (shape ``(..., *lattice.shape)``).  Returns the moments themselves
    plus ``chi, chi_conn, binder, xi2, m_R, lambda_R, Z`` (shape ``(...)``).  G2(0) is taken
    as V <M^2> (identical to g2 at p = 0).
    """
    missing = [k for k in MOMENT_KEYS if k not in means]
    if missing:
        raise ValueError(f"means lacks {missing}; required keys are {list(MOMENT_KEYS)}")
    m2, m4, abs_m = (np.asarray(means[k], dtype=np.float64) for k in ("m2", "m4", "abs_m"))
    xi2 = correlation_length(means["g2"], lattice)
    m_r = renormalized_mass(xi2)
    return {
        "m": np.asarray(means["m"], dtype=np.float64),
        "abs_m": abs_m,
        "m2": m2,
        "m4": m4,
        "g2": np.asarray(means["g2"], dtype=np.float64),
        "chi": susceptibility(m2, lattice.volume),
        "chi_conn": connected_susceptibility(m2, abs_m, lattice.volume),
        "binder": binder_cumulant(m2, m4),
        "xi2": xi2,
        "m_R": m_r,
        "lambda_R": renormalized_coupling(m2, m4, xi2, lattice),
        "Z": field_renormalization(m_r, susceptibility(m2, lattice.volume)),
    }
