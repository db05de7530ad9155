"""Jackknife, bootstrap, Gamma-method tau_int and binning (rgdist.measure.stats)."""
import math

import numpy as np
import pytest
import torch

from rgdist.measure.stats import (
    autocovariance,
    binned,
    bootstrap,
    effective_sample_size,
    jackknife,
    jackknife_samples,
    tau_int,
)

torch.set_num_threads(1)


def ar1(n, rho, seed, n_chains=None):
    """Stationary AR(1) x_{t+1} = rho x_t + e_t by FFT convolution with the truncated
    impulse response rho^k (k < K, rho^K < 1e-17): exact up to that truncation."""
    rng = np.random.default_rng(seed)
    k = int(math.ceil(math.log(1e-17) / math.log(rho)))
    shape = (n + k,) if n_chains is None else (n + k, n_chains)
    e = rng.standard_normal(shape)
    size = 1 << (n + 2 * k).bit_length()
    h = rho ** np.arange(k)
    hf = np.fft.rfft(h, size)
    if n_chains is not None:
        hf = hf[:, None]
    x = np.fft.irfft(np.fft.rfft(e, size, axis=0) * hf, size, axis=0)
    return x[k:n + k]


# --- jackknife ---------------------------------------------------------------------
def test_jackknife_of_mean_equal_bins_is_standard_error():
    rng = np.random.default_rng(1)
    counts = np.full(10, 7.0)
    sums = rng.normal(size=(10, 3)) * 7
    value, err = jackknife(lambda m: m, sums, counts)
    bin_means = sums / 7
    np.testing.assert_allclose(value, bin_means.mean(0), rtol=1e-13)
    np.testing.assert_allclose(err, bin_means.std(0, ddof=1) / math.sqrt(10), rtol=1e-12)


def test_jackknife_of_mean_unequal_bins_closed_form():
    # delete-m_j jackknife of a mean: pseudo-values are the bin means, so
    # var = (1/K) sum_b n_b (xbar_b - xbar)^2 / (n - n_b)
    rng = np.random.default_rng(2)
    counts = rng.integers(1, 20, size=12).astype(float)
    sums = rng.normal(size=12) * counts
    value, err = jackknife(lambda m: m, sums, counts)
    n = counts.sum()
    xbar = sums.sum() / n
    expected = np.sum(counts * (sums / counts - xbar) ** 2 / (n - counts)) / 12
    assert value == pytest.approx(xbar, rel=1e-13)
    assert err == pytest.approx(math.sqrt(expected), rel=1e-12)


def test_jackknife_recomputes_nonlinear_fn_per_replica():
    rng = np.random.default_rng(3)
    k = 8
    counts = np.full(k, 5.0)
    sums = {"a": rng.uniform(1, 2, size=k) * 5, "b": rng.uniform(1, 2, size=k) * 5}
    fn = lambda m: {"ratio": m["a"] / m["b"] ** 2}
    out = jackknife(fn, sums, counts)
    reps = [(sums["a"].sum() - sums["a"][i]) / (sums["b"].sum() - sums["b"][i]) ** 2 * (35.0)
            for i in range(k)]
    reps = np.array(reps)
    brute = math.sqrt((k - 1) / k * np.sum((reps - reps.mean()) ** 2))
    assert out["ratio"][0] == pytest.approx(sums["a"].sum() / 40 / (sums["b"].sum() / 40) ** 2, rel=1e-13)
    assert out["ratio"][1] == pytest.approx(brute, rel=1e-12)


def test_jackknife_skips_empty_bins_and_single_bin_gives_nan():
    rng = np.random.default_rng(4)
    counts = np.array([3.0, 4.0, 5.0])
    sums = rng.normal(size=3)
    ref = jackknife(lambda m: m ** 2, sums, counts)
    padded = jackknife(lambda m: m ** 2, np.r_[sums, 0.0, 0.0], np.r_[counts, 0.0, 0.0])
    assert padded == pytest.approx(ref, rel=1e-14)
    value, err = jackknife(lambda m: m, np.array([6.0, 0.0]), np.array([3.0, 0.0]))
    assert value == 2.0 and math.isnan(err)


def test_jackknife_bad_input():
    with pytest.raises(ValueError, match="leading axis"):
        jackknife(lambda m: m, np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="counts"):
        jackknife(lambda m: m, np.zeros(3), -np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        jackknife(lambda m: m, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="n_bins"):
        jackknife_samples(lambda m: m, np.zeros(5), 6)


def test_jackknife_samples_equals_manual_blocks():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(103, 2))
    fn = lambda m: m[..., 0] / m[..., 1]
    blocks = np.array_split(np.arange(103), 10)
    sums = np.stack([x[b].sum(0) for b in blocks])
    counts = np.array([len(b) for b in blocks], float)
    assert jackknife_samples(fn, x, 10) == pytest.approx(jackknife(fn, sums, counts), rel=1e-13)


def test_bootstrap_matches_jackknife_for_mean():
    # for a linear fn over K bins: var_boot = (K-1)/K var_jack (plus Monte Carlo noise of
    # relative size ~ 1/sqrt(2 n_boot) on the error)
    rng = np.random.default_rng(6)
    k, n_boot = 20, 4000
    sums = rng.normal(size=k) * 4
    counts = np.full(k, 4.0)
    _, err_j = jackknife(lambda m: m, sums, counts)
    g = torch.Generator().manual_seed(0)
    value, err_b = bootstrap(lambda m: m, sums, counts, n_boot, generator=g)
    assert value == pytest.approx(sums.sum() / 80, rel=1e-13)
    ratio = err_b / (err_j * math.sqrt((k - 1) / k))
    assert abs(ratio - 1) < 4 / math.sqrt(2 * n_boot), ratio
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap(lambda m: m, sums, counts, 1, generator=g)


# --- Gamma method --------------------------------------------------------------------
def test_autocovariance_matches_direct_sum():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 3))
    gamma = autocovariance(x)
    dev = x - x.mean()
    for t in (0, 1, 5, 49):
        direct = np.sum(dev[: 50 - t] * dev[t:]) / (3 * (50 - t))
        assert gamma[t] == pytest.approx(direct, rel=1e-10, abs=1e-14)


def test_tau_int_ar1_single_chain():
    rho = 0.9
    exact = (1 + rho) / (2 * (1 - rho))  # 9.5
    tau, dtau, w = tau_int(ar1(200_000, rho, seed=11))
    assert abs(tau - exact) < 3 * dtau, (tau, dtau, w)
    assert 0.02 < dtau / tau < 0.1 and 20 < w < 400


def test_tau_int_ar1_replica_chains():
    rho = 0.9
    exact = (1 + rho) / (2 * (1 - rho))
    tau, dtau, w = tau_int(ar1(25_000, rho, seed=12, n_chains=8))
    assert abs(tau - exact) < 3 * dtau, (tau, dtau, w)


def test_tau_int_white_noise_and_constant():
    x = np.random.default_rng(13).normal(size=100_000)
    tau, dtau, w = tau_int(x)
    assert abs(tau - 0.5) < 3 * dtau and w <= 5
    assert effective_sample_size(x) == pytest.approx(x.size / (2 * tau))
    assert tau_int(np.ones(100)) == (0.5, 0.0, 0)


def test_tau_int_bad_input():
    with pytest.raises(ValueError, match="S must"):
        tau_int(np.zeros(10), S=0)
    with pytest.raises(ValueError, match="series"):
        tau_int(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="finite"):
        tau_int(np.array([1.0, np.nan, 2.0]))


# --- binning -----------------------------------------------------------------------
def test_binned_exact_and_bad_input():
    np.testing.assert_array_equal(binned(np.arange(10.0), 3), [1.0, 4.0, 7.0])
    x = np.arange(12.0).reshape(6, 2)
    np.testing.assert_array_equal(binned(x, 2), [[1, 2], [5, 6], [9, 10]])
    for bad in (0, 11, 2.0, True):
        with pytest.raises(ValueError, match="bin_size"):
            binned(np.arange(10.0), bad)


def test_binned_variance_of_ar1_matches_exact_formula():
    # b var(block mean) / var(x) = 1 + 2 sum_{t=1}^{b-1} (1 - t/b) rho^t  for AR(1);
    # estimated from n_blocks blocks with relative error ~ sqrt(2/n_blocks)
    rho, b = 0.9, 200
    x = ar1(200_000, rho, seed=14)
    blocks = binned(x, b)
    t = np.arange(1, b)
    exact = 1 + 2 * np.sum((1 - t / b) * rho ** t)
    measured = b * blocks.var(ddof=1) / (1 / (1 - rho ** 2))
    assert abs(measured / exact - 1) < 4 * math.sqrt(2 / blocks.size), (measured, exact)
