"""Time grids for the reverse process: decreasing float64 tensors from T down to t_min.

Every grid has ``n_steps + 1`` points, starts exactly at ``T`` and ends exactly at ``t_min``.

- ``uniform``:   t_k = T - k (T - t_min)/n.
- ``log``:       geometric in t, t_k = T (t_min/T)^(k/n), so log t is uniform. For the
                 heat-kernel (Carosso) scheme the RG scale is Lambda_t ~ t^(-1/2), so this is
                 uniform in log Lambda_t. (For Polchinski-type schemes Lambda_t = e^(-t) Lambda0,
                 so uniform in log Lambda_t is the ``uniform`` grid.)
- ``snr``:       uniform in the log signal-to-noise ratio log(A_t^2 G / Sigma_t) of one
                 reference mode; t is found by bisection (log SNR decreases with t).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from rgdist.catalog import TIME_GRIDS

GRID_KINDS = TIME_GRIDS  # the names of rgdist.catalog (shared with the campaign schema)


def check_n_steps(n_steps) -> int:
    if isinstance(n_steps, bool) or not hasattr(n_steps, "__index__"):
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    n_steps = int(n_steps)
    if n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps}")
    return n_steps


def check_t_range(T: float, t_min, *, positive: bool) -> float:
    """t_min must satisfy 0 <= t_min < T (0 < t_min for geometric and SNR grids)."""
    try:
        t_min = float(t_min)
    except (TypeError, ValueError):
        raise ValueError(f"t_min must be a real number in [0, T={T}), got {t_min!r}") from None
    low_ok = t_min > 0 if positive else t_min >= 0
    if not (math.isfinite(t_min) and low_ok and t_min < T):
        bound = "(0" if positive else "[0"
        raise ValueError(f"t_min must lie in {bound}, T={T}), got {t_min}")
    return t_min


def _pin_ends(grid: torch.Tensor, T: float, t_min: float) -> torch.Tensor:
    grid[0] = T
    grid[-1] = t_min
    return grid


def uniform_grid(T: float, t_min: float, n_steps: int) -> torch.Tensor:
    n_steps = check_n_steps(n_steps)
    t_min = check_t_range(T, t_min, positive=False)
    return _pin_ends(torch.linspace(T, t_min, n_steps + 1, dtype=torch.float64), T, t_min)


def geometric_grid(T: float, t_min: float, n_steps: int) -> torch.Tensor:
    n_steps = check_n_steps(n_steps)
    t_min = check_t_range(T, t_min, positive=True)
    logs = torch.linspace(math.log(T), math.log(t_min), n_steps + 1, dtype=torch.float64)
    return _pin_ends(torch.exp(logs), T, t_min)


def snr_grid(log_snr: Callable[[torch.Tensor], torch.Tensor], T: float, t_min: float,
             n_steps: int, iterations: int = 200) -> torch.Tensor:
    """Grid uniform in ``log_snr(t)`` (a decreasing function of t, evaluated on a 1D tensor).

    The targets are spaced uniformly between log_snr(T) and log_snr(t_min); each is inverted
    by vectorized bisection on [t_min, T] to float64 precision.
    """
    n_steps = check_n_steps(n_steps)
    t_min = check_t_range(T, t_min, positive=True)
    ends = log_snr(torch.tensor([T, t_min], dtype=torch.float64))
    if not bool(torch.isfinite(ends).all()) or not bool(ends[0] < ends[1]):
        raise ValueError(
            "the reference mode's log SNR must be finite and decrease from t_min to T "
            f"for an 'snr' grid (got {ends[1].item()} at t_min, {ends[0].item()} at T)")
    targets = torch.linspace(float(ends[0]), float(ends[1]), n_steps + 1, dtype=torch.float64)
    lo = torch.full_like(targets, t_min)
    hi = torch.full_like(targets, T)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = log_snr(mid) > targets        # SNR still too high: the root lies at larger t
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    grid = 0.5 * (lo + hi)
    return _pin_ends(grid, T, t_min)
