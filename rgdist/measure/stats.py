"""Error analysis (numpy): jackknife and bootstrap over bins, Gamma-method tau_int, binning.

Jackknife over bins (delete-one-bin, weighted for unequal bins).  The data arrive as
per-bin sums ``S_b`` and counts ``n_b`` (b = 1..K, empty bins dropped).  With the total
``S = sum_b S_b``, ``n = sum_b n_b``:

    full means        a      = S / n
    replica means     a_(-b) = (S - S_b) / (n - n_b)
    theta = fn(a),    theta_b = fn(a_(-b))          (fn recomputed in EVERY replica)

and, with h_b = n / n_b (delete-m_j jackknife, Busing, Meijer & van der Leeden 1999),

    pseudo-values     t_b     = h_b theta - (h_b - 1) theta_b
    bias-corrected    theta_J = K theta - sum_b (1 - n_b/n) theta_b
    variance          var     = (1/K) sum_b (t_b - theta_J)^2 / (h_b - 1).

For equal bins this is the textbook  var = (K-1)/K sum_b (theta_b - mean_b theta_b)^2.
The reported value is the plug-in ``theta = fn(full means)``.

Autocorrelations: ``tau_int`` implements U. Wolff's Gamma method with automatic windowing
(Comput. Phys. Commun. 156 (2004) 143), for one series or several replica chains.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Union

import numpy as np
import torch

Sums = Union[np.ndarray, Mapping[str, np.ndarray]]


# --- helpers -----------------------------------------------------------------------
def _as_sums(sums: Sums) -> tuple[dict[str, np.ndarray], bool]:
    """Normalize ``sums`` to a dict of float64 arrays; remember whether it was a bare array."""
    if isinstance(sums, Mapping):
        if not sums:
            raise ValueError("sums must not be empty")
        return {k: np.asarray(v, dtype=np.float64) for k, v in sums.items()}, False
    return {"_": np.asarray(sums, dtype=np.float64)}, True


def _check_counts(sums: dict[str, np.ndarray], counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f"counts must be a 1-D array over bins, got shape {counts.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("counts must be finite and >= 0")
    for key, value in sums.items():
        if value.ndim < 1 or value.shape[0] != counts.shape[0]:
            raise ValueError(
                f"sums[{key!r}] must have leading axis of length {counts.shape[0]} (the bins), "
                f"got shape {value.shape}"
            )
    return counts


def _means(sums: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Divide sums with a leading axis by counts of that axis (broadcast over the rest)."""
    return {k: v / counts.reshape(counts.shape + (1,) * (v.ndim - counts.ndim)) for k, v in sums.items()}


def _call(fn: Callable, means: dict[str, np.ndarray], bare: bool):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = fn(means["_"] if bare else means)
    if isinstance(out, Mapping):
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}, False
    return {"_": np.asarray(out, dtype=np.float64)}, True


def _unwrap(result: dict, bare: bool):
    if bare:
        return result["_"]
    return result


def _scalarize(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


# --- jackknife / bootstrap ----------------------------------------------------------
def jackknife(fn: Callable, sums: Sums, counts) -> tuple:
    """Delete-one-bin jackknife of ``fn`` applied to bin means (formulas in the module doc).

    Args:
        fn: maps means to an estimate.  It receives what ``sums`` is (an array or a dict of
            arrays) and is called twice: once with the full means (shape ``(...)``) and once
            with all K replica means stacked on a new leading axis (shape ``(K, ...)``); it
            must broadcast over that leading axis.  It may return an array or a dict.
        sums: per-bin sums, an array of shape ``(n_bins, ...)`` or a dict of such arrays.
        counts: number of samples in each bin, shape ``(n_bins,)``.  Empty bins are skipped.

    Returns:
        ``(value, err)`` (floats or arrays) when ``fn`` returns an array; when it returns a
        dict, a dict ``{name: (value, err)}``.  ``err`` is nan with fewer than 2 non-empty
        bins, and nan wherever a replica is nan (e.g. an ill-defined xi2).
    """
    sums, bare_in = _as_sums(sums)
    counts = _check_counts(sums, counts)
    keep = counts > 0
    if not np.any(keep):
        raise ValueError("jackknife needs at least one sample (all bins are empty)")
    sums = {k: v[keep] for k, v in sums.items()}
    counts = counts[keep]
    n_tot = counts.sum()
    total = {k: v.sum(axis=0) for k, v in sums.items()}
    theta, bare_out = _call(fn, {k: v / n_tot for k, v in total.items()}, bare_in)
    n_bins = counts.shape[0]
    if n_bins < 2:
        err = {k: np.full(np.shape(v), np.nan) for k, v in theta.items()}
    else:
        replica_sums = {k: total[k][None] - v for k, v in sums.items()}
        replicas, _ = _call(fn, _means(replica_sums, n_tot - counts), bare_in)
        h = n_tot / counts
        err = {}
        for key, value in theta.items():
            reps = replicas[key]
            if reps.shape[:1] != (n_bins,):
                raise ValueError(
                    f"fn must broadcast over the leading replica axis: output {key!r} has shape "
                    f"{reps.shape} for {n_bins} replicas"
                )
            hb = h.reshape((n_bins,) + (1,) * (reps.ndim - 1))
            pseudo = hb * value[None] - (hb - 1.0) * reps
            theta_j = n_bins * value - np.sum((1.0 - 1.0 / hb) * reps, axis=0)
            var = np.sum((pseudo - theta_j[None]) ** 2 / (hb - 1.0), axis=0) / n_bins
            err[key] = np.sqrt(var)
    out = {k: (_scalarize(theta[k]), _scalarize(err[k])) for k in theta}
    return _unwrap(out, bare_out)


def jackknife_samples(fn: Callable, samples: Sums, n_bins: int) -> tuple:
    """Jackknife of ``fn`` for per-sample data: contiguous blocks along axis 0 become bins.

    ``samples`` is an array ``(n, ...)`` or a dict of such arrays (same n); the blocks are
    ``np.array_split`` of ``range(n)`` into ``n_bins`` parts (sizes differ by at most 1).
    For a Markov chain choose blocks of at least ~2 tau_int.  Returns as :func:`jackknife`.
    """
    data, bare = _as_sums(samples)
    lengths = {v.shape[0] if v.ndim else -1 for v in data.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError("samples must share one leading (sample) axis")
    n = lengths.pop()
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or not 1 <= n_bins <= n:
        raise ValueError(f"n_bins must be an integer in [1, {n}] (number of samples), got {n_bins!r}")
    bin_of = np.repeat(np.arange(n_bins), [len(c) for c in np.array_split(np.arange(n), n_bins)])
    counts = np.bincount(bin_of, minlength=n_bins).astype(np.float64)
    sums = {}
    for key, value in data.items():
        out = np.zeros((n_bins,) + value.shape[1:])
        np.add.at(out, bin_of, value)
        sums[key] = out
    return jackknife(fn, sums["_"] if bare else sums, counts)


def bootstrap(fn: Callable, sums: Sums, counts, n_boot: int, *, generator: torch.Generator) -> tuple:
    """Bootstrap over bins: resample the non-empty bins with replacement ``n_boot`` times.

    Each replica's means are (sum of drawn bin sums) / (sum of drawn counts) and ``fn`` is
    recomputed on them; ``err`` is the standard deviation (ddof = 1) of the replicas.  The
    value is ``fn(full means)``.  Same ``fn`` contract and return shape as :func:`jackknife`.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator")
    sums, bare_in = _as_sums(sums)
    counts = _check_counts(sums, counts)
    keep = counts > 0
    if not np.any(keep):
        raise ValueError("bootstrap needs at least one sample (all bins are empty)")
    sums = {k: v[keep] for k, v in sums.items()}
    counts = counts[keep]
    n_bins = counts.shape[0]
    theta, bare_out = _call(fn, {k: v.sum(0) / counts.sum() for k, v in sums.items()}, bare_in)
    idx = torch.randint(n_bins, (int(n_boot), n_bins), generator=generator,
                        device=generator.device).cpu().numpy()
    boot_counts = counts[idx].sum(axis=1)
    boot_sums = {k: v[idx].sum(axis=1) for k, v in sums.items()}
    replicas, _ = _call(fn, _means(boot_sums, boot_counts), bare_in)
    out = {k: (_scalarize(theta[k]), _scalarize(np.std(replicas[k], axis=0, ddof=1))) for k in theta}
    return _unwrap(out, bare_out)


# --- autocorrelations ---------------------------------------------------------------
def _as_chains(series) -> np.ndarray:
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"series must have shape (n_time,) or (n_time, n_chains), got {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"series needs n_time >= 2 and n_chains >= 1, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("series must be finite")
    return x


def autocovariance(series) -> np.ndarray:
    """Gamma(t), t = 0..n-1, of one series ``(n,)`` or replica chains ``(n, R)``.

    Gamma(t) = 1/(R (n - t)) sum_r sum_{i=1}^{n-t} (a_i^r - abar)(a_{i+t}^r - abar), abar the
    mean over all chains and times (Wolff 2004, eq. 31).  Computed with one FFT per chain.
    """
    x = _as_chains(series)
    n, n_chains = x.shape
    dev = x - x.mean()
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(dev, n=size, axis=0)
    acf = np.fft.irfft(f * np.conj(f), n=size, axis=0)[:n].sum(axis=1)
    return acf / (n_chains * (n - np.arange(n)))


def tau_int(series, S: float = 1.5, bias_correction: bool = True) -> tuple[float, float, int]:
    """Integrated autocorrelation time by the Gamma method with automatic windowing.

    rho(t) = Gamma(t)/Gamma(0);  tau_int(W) = 1/2 + sum_{t=1}^W rho(t);
    tau_W = S / ln((2 tau_int(W) + 1)/(2 tau_int(W) - 1))  (a tiny number if tau_int(W) <= 1/2);
    the window W is the first W >= 1 with  g(W) = exp(-W/tau_W) - tau_W/sqrt(W N) < 0,
    N = n_time * n_chains.  With ``bias_correction`` Gamma(t) += C_F(W)/N,
    C_F = Gamma(0) + 2 sum_{t=1}^W Gamma(t) (the bias from subtracting the sample mean),
    and tau_int(W) is recomputed.  Error (Madras-Sokal): dtau = tau sqrt(2 (2W + 1)/N).
    With this normalization white noise has tau = 1/2 and var(mean) = 2 tau var(a)/N.

    Args:
        series: shape ``(n_time,)`` or ``(n_time, n_chains)`` (independent replica chains,
            whose Gamma(t) are averaged).
        S: the window factor (Wolff recommends 1 <= S <= 2).

    Returns:
        ``(tau, dtau, W)``.  A constant series returns ``(0.5, 0.0, 0)``.  When no window is
        found before the end of the series, a RuntimeWarning is issued and W = n_time - 1.
    """
    if isinstance(S, bool) or not isinstance(S, (int, float, np.floating)) or not (math.isfinite(S) and S > 0):
        raise ValueError(f"S must be a finite number > 0 (typically 1..2), got {S!r}")
    x = _as_chains(series)
    n, n_chains = x.shape
    n_tot = n * n_chains
    gamma = autocovariance(x)
    if not gamma[0] > 0:
        return 0.5, 0.0, 0
    tau_cum = 0.5 + np.cumsum(gamma[1:] / gamma[0])  # tau_int(W), W = 1..n-1
    if tau_cum.size == 0:
        return 0.5, float(0.5 * math.sqrt(2.0 / n_tot)), 0
    windows = np.arange(1, n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tau_w = np.where(tau_cum > 0.5,
                         S / np.log((2 * tau_cum + 1) / (2 * tau_cum - 1)), np.finfo(float).tiny)
        g = np.exp(-windows / tau_w) - tau_w / np.sqrt(windows * n_tot)
    negative = np.flatnonzero(g < 0)
    if negative.size:
        w = int(windows[negative[0]])
    else:
        w = n - 1
        warnings.warn(f"tau_int: no window found within {n} points; series too short", RuntimeWarning)
    if bias_correction:
        c_f = gamma[0] + 2.0 * gamma[1:w + 1].sum()
        gamma = gamma + c_f / n_tot
    tau = float(0.5 + gamma[1:w + 1].sum() / gamma[0])
    dtau = float(abs(tau) * math.sqrt(2.0 * (2 * w + 1) / n_tot))
    return tau, dtau, w


def binned(series, bin_size: int) -> np.ndarray:
    """Means of consecutive non-overlapping blocks of ``bin_size`` along axis 0.

    The incomplete last block is dropped: the result has shape ``(n // bin_size, ...)``.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim < 1:
        raise ValueError("series must have at least one axis (time)")
    n = x.shape[0]
    if isinstance(bin_size, bool) or not isinstance(bin_size, (int, np.integer)) or not 1 <= bin_size <= n:
        raise ValueError(f"bin_size must be an integer in [1, {n}] (series length), got {bin_size!r}")
    n_blocks = n // bin_size
    return x[: n_blocks * bin_size].reshape((n_blocks, bin_size) + x.shape[1:]).mean(axis=1)


def effective_sample_size(series, S: float = 1.5) -> float:
    """N_eff = N / (2 tau_int), N = n_time * n_chains (tau_int from :func:`tau_int`)."""
    x = _as_chains(series)
    tau, _, _ = tau_int(x, S=S)
    return float(x.size / (2.0 * tau))
