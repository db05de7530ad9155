"""Shared pieces of the finite-size-scaling fits: curve validation and the parametric bootstrap
(reproducible generators per sub-analysis, robust 68 % half widths)."""
from __future__ import annotations

import math
import zlib

import numpy as np

ONE_SIGMA = 0.682689492137  # probability mass of a Gaussian within +-1 sigma


def curve_arrays(name: str, x, y, dy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one curve; drop nan means; sort by x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    if x.ndim != 1 or y.shape != x.shape or dy.shape != x.shape:
        raise ValueError(f"m2_{name}, U_{name}, dU_{name} must be 1-D arrays of equal length, "
                         f"got shapes {x.shape}, {y.shape}, {dy.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"m2_{name} must be finite")
    keep = np.isfinite(y)
    x, y, dy = x[keep], y[keep], dy[keep]
    if not np.all(np.isfinite(dy) & (dy > 0)):
        raise ValueError(f"dU_{name} must be finite and > 0 where U_{name} is given")
    order = np.argsort(x)
    x, y, dy = x[order], y[order], dy[order]
    if np.any(np.diff(x) == 0):
        raise ValueError(f"m2_{name} has duplicate values")
    return x, y, dy



def half_width_68(samples: np.ndarray) -> float:
    """Half the width of the central 68.27 % interval (nan for fewer than 10 samples)."""
    samples = samples[np.isfinite(samples)]
    if len(samples) < 10:
        return math.nan
    lo, hi = np.quantile(samples, [(1 - ONE_SIGMA) / 2, (1 + ONE_SIGMA) / 2])
    return float(hi - lo) / 2


def make_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def check_n_boot(n_boot) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    return int(n_boot)


def sub_rng(seed: int, *key) -> np.random.Generator:
    """An independent, order-independent generator for one sub-analysis."""
    words = [zlib.crc32(repr(k).encode()) for k in key]
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(words)))

