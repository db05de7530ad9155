"""Building blocks of the m2 reweighting (numpy only): the weights, the overlap test, the
single-histogram estimate and the argument checks shared by :mod:`rgdist.analysis.reweight_m2`.

Convention (rgdist.lattice.action, SPEC section "Reweighting in m2"): the action is linear in
m2 with dS/dm2 = E/2, E[phi] = sum_x phi_x^2, so a configuration drawn at m2_0 carries the
exact weight w = exp(-(m2 - m2_0) E / 2) at m2 (same lam, same lattice).

Overlap: the Kish effective sample size ESS = (sum w)^2 / sum w^2 of the weights at a target
measures how many of the configurations still contribute there.  Below the threshold
(:func:`default_min_ess`: max(50, 1 % of the N configurations), N/2 for N < 100) the target
lies beyond the overlap the data support and :func:`check_overlap` raises a ValueError naming
the target and its ESS, unless extrapolation is explicitly allowed.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = [
    "DS_DM2", "MIN_ESS_ABS", "MIN_ESS_FRAC", "check_overlap", "default_min_ess", "kish_ess",
    "logsumexp", "single_histogram",
]

DS_DM2 = 0.5        # dS/dm2 = E/2 with E = sum_x phi_x^2 (rgdist.lattice.action)
MIN_ESS_ABS = 50    # default overlap threshold: ESS >= max(MIN_ESS_ABS, MIN_ESS_FRAC * N)
MIN_ESS_FRAC = 0.01


def logsumexp(a, axis: int = -1) -> np.ndarray:
    """log sum exp of ``a`` along ``axis``, shifted by the maximum (-inf if all are -inf)."""
    a = np.asarray(a, dtype=np.float64)
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        total = np.log(np.sum(np.exp(a - top), axis=axis, keepdims=True)) + top
    return np.squeeze(total, axis=axis)


def finite_float(name: str, value) -> float:
    """``value`` as a finite float, or a ValueError naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return out


def target_array(m2) -> tuple[np.ndarray, bool]:
    """The target m2 as a 1-D float array, and whether a single number was given."""
    try:
        arr = None if isinstance(m2, (str, bytes)) else np.asarray(m2, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("target m2 must be a finite number or a non-empty 1-D array of them, "
                         f"got {m2!r}")
    return np.atleast_1d(arr), arr.ndim == 0


def phi2_sums(name: str, value) -> np.ndarray:
    """A checked 1-D array of E = sum_x phi_x^2, one per configuration."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (one sum_x phi_x^2 per "
                         f"configuration), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0 (it is sum_x phi_x^2)")
    return arr


def per_config(name: str, value, n: int) -> np.ndarray:
    """A checked finite array whose leading axis has one entry per configuration (n)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have a leading axis of length {n} (one entry per "
                         f"configuration), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def kish_ess(log_w, axis: int = -1):
    """Kish effective sample size (sum w)^2 / sum w^2 from log weights (any normalization)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    return np.exp(2.0 * logsumexp(log_w, axis) - logsumexp(2.0 * log_w, axis))


def default_min_ess(n_total: int) -> float:
    """The default overlap threshold: max(50, 1 % of n_total), and n_total/2 below 100."""
    n_total = int(n_total)
    return max(min(float(MIN_ESS_ABS), 0.5 * n_total), MIN_ESS_FRAC * n_total)


def resolve_min_ess(min_ess, n_total: int) -> float:
    """``min_ess`` checked (>= 0), or the default for ``n_total`` configurations."""
    if min_ess is None:
        return default_min_ess(n_total)
    out = finite_float("min_ess", min_ess)
    if out < 0:
        raise ValueError(f"min_ess must be >= 0, got {min_ess!r}")
    return out


def check_overlap(targets: np.ndarray, ess: np.ndarray, min_ess: float, n_total: int,
                  where: str, allow_extrapolation: bool = False) -> None:
    """ValueError naming the first target whose ESS is below ``min_ess`` (nan fails too)."""
    if allow_extrapolation:
        return
    bad = np.flatnonzero(~(np.asarray(ess) >= min_ess))
    if bad.size:
        i = bad[0]
        more = f" ({bad.size} of {targets.size} targets fail)" if bad.size > 1 else ""
        raise ValueError(
            f"target m2 = {targets[i]:.6g} lies beyond the overlap of the data ({where}): its "
            f"Kish effective sample size ESS = {ess[i]:.3g} of {n_total} configurations is below "
            f"the threshold {min_ess:.3g}{more}; pass allow_extrapolation=True to reweight anyway")


def single_histogram(phi2_sum, obs, m2_from, m2_to, *, allow_extrapolation: bool = False,
                     min_ess=None):
    """Reweight per-configuration observables of one ensemble from m2_from to m2_to.

    <O>(m2) = sum_n w_n O_n / sum_n w_n with log w_n = -(m2 - m2_from) E_n / 2 (no errors:
    :class:`rgdist.analysis.reweight_m2.MultiHistogram` with one ensemble gives jackknifed
    ones).

    Args:
        phi2_sum: E = sum_x phi_x^2 per configuration, shape ``(n,)``.
        obs: per-configuration values, an array ``(n, ...)`` or a dict of such arrays.
        m2_from: the m2 the configurations were drawn at.
        m2_to: a target m2 or a 1-D array of targets.
        allow_extrapolation: skip the overlap check (module docstring).
        min_ess: overlap threshold (default :func:`default_min_ess` of n).

    Returns:
        <O>(m2_to): shape ``obs.shape[1:]`` for one target, ``(T, ...)`` for T targets (a dict
        of these when ``obs`` is a dict).  At m2_to == m2_from every weight is exactly 1 and
        the result is ``obs.mean(0)`` bit for bit.
    """
    E = phi2_sums("phi2_sum", phi2_sum)
    n = E.shape[0]
    bare = not isinstance(obs, Mapping)
    columns = {"_": obs} if bare else dict(obs)
    if not columns:
        raise ValueError("obs must not be empty")
    columns = {key: per_config("obs" if bare else f"obs[{key!r}]", value, n)
               for key, value in columns.items()}
    m2_from = finite_float("m2_from", m2_from)
    targets, scalar = target_array(m2_to)
    log_w = -(targets[:, None] - m2_from) * DS_DM2 * E[None, :]          # (T, n)
    check_overlap(targets, kish_ess(log_w, axis=1), resolve_min_ess(min_ess, n), n,
                  f"one ensemble at m2 = {m2_from:.6g}", allow_extrapolation)
    w = np.exp(log_w - np.max(log_w, axis=1, keepdims=True))
    out = {}
    for key, value in columns.items():
        rows = [np.sum(w[t].reshape((n,) + (1,) * (value.ndim - 1)) * value, axis=0) / np.sum(w[t])
                for t in range(targets.size)]
        out[key] = rows[0] if scalar else np.stack(rows)
    return out["_"] if bare else out
