"""Mergeable jackknife accumulator (rgdist.measure.accumulators)."""
import math

import numpy as np
import pytest
import torch

from rgdist.lattice.geometry import Lattice
from rgdist.measure import observables as obs
from rgdist.measure.accumulators import ObservableAccumulator

torch.set_num_threads(1)

SCALARS = ("m", "abs_m", "m2", "m4", "chi", "chi_conn", "binder", "xi2", "m_R", "lambda_R", "Z",
           "mean_max_abs")


def double_well_sample(lattice, n, seed):
    """Non-Gaussian test data: a free field plus a random +-0.3 offset per configuration."""
    g = torch.Generator().manual_seed(seed)
    phi = lattice.colored_noise(lattice.free_propagator(0.5), n, generator=g)
    sign = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
    return phi + 0.3 * sign.reshape(-1, *([1] * lattice.d))


def assert_same_estimates(a, b, rtol=1e-12):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_allclose(a[key][0], b[key][0], rtol=rtol, atol=1e-300, err_msg=key)
        np.testing.assert_allclose(a[key][1], b[key][1], rtol=rtol, atol=1e-300, err_msg=key)


# --- merging ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_parts", [2, 7])
def test_merge_of_random_splits_equals_one_pass(n_parts):
    lattice = Lattice((6, 8))
    n, n_bins = 700, 10
    phi = double_well_sample(lattice, n, seed=1)
    bins = torch.arange(n) % n_bins  # global sample index % n_bins
    one_pass = ObservableAccumulator(lattice, n_bins).update(phi, bins)
    g = torch.Generator().manual_seed(n_parts)
    part = torch.randint(0, n_parts, (n,), generator=g)
    accs = []
    for r in range(n_parts):
        acc = ObservableAccumulator(lattice, n_bins)
        sel = torch.nonzero(part == r).flatten()
        for chunk in torch.split(sel, 37):  # several updates per part
            acc.update(phi[chunk], bins[chunk])
        accs.append(acc)
    merged = ObservableAccumulator(lattice, n_bins)
    for acc in accs:
        merged.merge(acc)
    reference = one_pass.estimate()
    assert abs(reference["binder"][0]) > 5 * reference["binder"][1]  # data is non-Gaussian
    assert_same_estimates(merged.estimate(), reference)
    assert merged.n == n and np.array_equal(merged.counts, one_pass.counts)
    # the MPI route: elementwise reduction of to_arrays() with the documented ops
    arrays = [acc.to_arrays() for acc in accs]
    reduced = {}
    for key, op in ObservableAccumulator.REDUCTIONS.items():
        stack = np.stack([a[key] for a in arrays])
        reduced[key] = stack.sum(0) if op == "sum" else stack.max(0)
    rebuilt = ObservableAccumulator.from_arrays(lattice, reduced)
    assert_same_estimates(rebuilt.estimate(), reference)


def test_max_abs_is_per_bin_maximum_and_merges_by_max():
    lattice = Lattice(4)
    phi = torch.zeros(3, 4, 4, dtype=torch.float64)
    phi[0, 1, 2], phi[1, 0, 0], phi[2, 3, 3] = -5.0, 2.0, 3.0
    acc = ObservableAccumulator(lattice, 2).update(phi, torch.tensor([1, 0, 0]))
    np.testing.assert_array_equal(acc.to_arrays()["max_abs"], [3.0, 5.0])
    other = ObservableAccumulator(lattice, 2).update(4 * torch.ones(1, 4, 4), 0)
    acc.merge(other)
    np.testing.assert_array_equal(acc.to_arrays()["max_abs"], [4.0, 5.0])
    est = acc.estimate()
    assert est["max_abs"][0] == 5.0 and math.isnan(est["max_abs"][1])
    assert est["mean_max_abs"][0] == pytest.approx((5 + 2 + 3 + 4) / 4)


# --- the jackknife -----------------------------------------------------------------------
def test_jackknife_equals_brute_force_delete_one_bin():
    lattice = Lattice(6)
    n, k = 400, 8
    phi = double_well_sample(lattice, n, seed=2)
    bins = torch.arange(n) % k
    est = ObservableAccumulator(lattice, k).update(phi, bins).estimate()
    replicas = []
    for drop in range(k):  # recompute everything from the data without bin `drop`
        keep = phi[bins != drop]
        m = obs.magnetization(keep).numpy()
        means = {"m": m.mean(), "abs_m": np.abs(m).mean(), "m2": (m ** 2).mean(),
                 "m4": (m ** 4).mean(), "g2": obs.two_point(keep, lattice).numpy().mean(0)}
        replicas.append(obs.ensemble_observables(means, lattice))
    for key in ("binder", "xi2", "lambda_R", "Z", "chi_conn"):
        reps = np.array([r[key] for r in replicas])
        brute = math.sqrt((k - 1) / k * np.sum((reps - reps.mean()) ** 2))
        assert est[key][1] == pytest.approx(brute, rel=1e-10), key


def test_empty_bins_are_skipped():
    lattice = Lattice(4)
    phi = double_well_sample(lattice, 120, seed=3)
    bins = torch.arange(120) % 6
    dense = ObservableAccumulator(lattice, 6).update(phi, bins).estimate()
    sparse = ObservableAccumulator(lattice, 15).update(phi, 2 * bins + 1).estimate()
    assert_same_estimates(sparse, dense)
    one_bin = ObservableAccumulator(lattice, 3).update(phi, 1).estimate()
    assert one_bin["chi"][0] == pytest.approx(dense["chi"][0], rel=1e-12)
    assert math.isnan(one_bin["chi"][1])


def binder_runs(n_reps, n=2000, k=20, lattice=Lattice(4)):
    """Repeated independent ensembles of white noise: M is exactly Gaussian, U = 0."""
    values, errs, naive = [], [], []
    for rep in range(n_reps):
        g = torch.Generator().manual_seed(1000 + rep)
        acc = ObservableAccumulator(lattice, k).update(lattice.white_noise(n, g), torch.arange(n) % k)
        est = acc.estimate()
        values.append(est["binder"][0])
        errs.append(est["binder"][1])
        # a jackknife with a FIXED full-sample denominator: err(<M^4>) / (3 <M^2>^2)
        naive.append(est["m4"][1] / (3 * est["m2"][0] ** 2))
    return np.array(values), np.array(errs), np.array(naive)


def test_binder_of_gaussian_field_is_zero_within_3_sigma():
    values, errs, _ = binder_runs(5)
    assert np.all(np.abs(values) < 3 * errs), values / errs


def t_prob_within_one(dof):
    """P(|T| < 1) for Student's t with `dof` degrees of freedom (numerical integral)."""
    t = np.linspace(0, 1, 20001)
    c = math.exp(math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)) / math.sqrt(dof * math.pi)
    f = c * (1 + t ** 2 / dof) ** (-(dof + 1) / 2)
    return 2 * float(np.sum((f[1:] + f[:-1]) / 2) * (t[1] - t[0]))


def test_binder_error_covers_and_matches_spread():
    n_reps, k = 300, 20
    values, errs, naive = binder_runs(n_reps, k=k)
    # coverage: with K bins, U/err ~ t_{K-1}; binomial bounds at 4 sigma
    p = t_prob_within_one(k - 1)
    frac = np.mean(np.abs(values) < errs)
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n_reps), (frac, p)
    # mean jackknife error vs the spread of repeated estimates; relative uncertainty of the
    # ratio: sample std of n_reps values (1/sqrt(2(R-1))) and of the mean error
    # (1/sqrt(2(K-1) R)); 4 sigma
    spread = values.std(ddof=1)
    sigma = math.sqrt(1 / (2 * (n_reps - 1)) + 1 / (2 * (k - 1) * n_reps))
    ratio = errs.mean() / spread
    assert abs(ratio - 1) < 4 * sigma, (ratio, sigma)
    # the fixed-denominator jackknife misses the anticorrelation of <M^4> and <M^2>^2: for
    # Gaussian M its error is sqrt(96/24) = 2 times the true one, far outside the bounds
    naive_ratio = naive.mean() / spread
    assert abs(naive_ratio - 1) > 8 * sigma, naive_ratio
    assert naive_ratio == pytest.approx(2.0, abs=6 * sigma)


# --- free field: exact answers -----------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (8, 12)])
def test_free_field_estimates_match_exact_propagator(shape):
    lattice = Lattice(shape)
    m2, n, k = 0.25, 4000, 20
    g = torch.Generator().manual_seed(7)
    prop = lattice.free_propagator(m2)
    phi = lattice.colored_noise(prop, n, generator=g)
    est = ObservableAccumulator(lattice, k).update(phi, torch.arange(n) % k).estimate()
    exact = {"xi2": 1 / math.sqrt(m2), "m_R": math.sqrt(m2), "chi": 1 / m2, "Z": 1.0,
             "lambda_R": 0.0, "binder": 0.0, "m": 0.0}
    for key, value in exact.items():
        mean, err = est[key]
        assert abs(mean - value) < 4 * err, (key, mean, err, value)
    g2, g2_err = est["g2"]
    pulls = (g2 - prop.numpy()) / g2_err
    assert np.max(np.abs(pulls)) < 4.5
    assert abs(np.mean(pulls ** 2) - 1) < 0.5  # half the modes are independent (p vs -p)


def test_ill_defined_xi2_is_nan():
    lattice = Lattice(8)
    wave = torch.cos(lattice.momenta()[0]).unsqueeze(0)  # M = 0, G2(0) = 0 < G2(p1)
    phi = torch.cat([torch.zeros_like(wave), wave])
    est = ObservableAccumulator(lattice, 2).update(phi, torch.tensor([0, 1])).estimate()
    for key in ("xi2", "m_R", "lambda_R", "Z"):
        assert math.isnan(est[key][0]), key


# --- input checking and devices ----------------------------------------------------------
def test_bad_input_raises_value_error():
    lattice = Lattice(4)
    acc = ObservableAccumulator(lattice, 3)
    phi = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match="n_bins"):
        ObservableAccumulator(lattice, 0)
    with pytest.raises(ValueError, match=r"bins must lie in \[0, 2\]"):
        acc.update(phi, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="bins must be an integer"):
        acc.update(phi, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        acc.update(phi, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        acc.update(torch.zeros(2, 4, 5), 0)
    with pytest.raises(ValueError, match="non-finite"):
        acc.update(torch.full((2, 4, 4), float("nan")), 0)
    with pytest.raises(ValueError, match="empty"):
        acc.estimate()
    with pytest.raises(ValueError, match="must match"):
        acc.merge(ObservableAccumulator(lattice, 4))
    with pytest.raises(ValueError, match="keys"):
        ObservableAccumulator.from_arrays(lattice, {"count": np.zeros(3)})
    arrays = acc.to_arrays()
    arrays["sum_g2"] = np.zeros((3, 5, 5))
    with pytest.raises(ValueError, match="sum_g2"):
        ObservableAccumulator.from_arrays(lattice, arrays)


def test_float32_input_and_integer_bin():
    lattice = Lattice(4)
    phi = double_well_sample(lattice, 50, seed=4)
    a = ObservableAccumulator(lattice, 1).update(phi.float(), 0).estimate()
    b = ObservableAccumulator(lattice, 1).update(phi.float().double(), torch.zeros(50, dtype=torch.int32))
    assert_same_estimates(a, b.estimate())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fields_give_cpu_results():
    lattice = Lattice(8)
    phi = double_well_sample(lattice, 300, seed=5)
    bins = torch.arange(300) % 6
    cpu = ObservableAccumulator(lattice, 6).update(phi, bins).estimate()
    on_gpu = ObservableAccumulator(lattice, 6, device="cuda").update(phi.cuda(), bins.cuda())
    mixed = ObservableAccumulator(lattice, 6).update(phi.cuda(), bins.cuda())
    assert_same_estimates(on_gpu.estimate(), cpu, rtol=1e-10)
    assert_same_estimates(mixed.estimate(), cpu, rtol=1e-10)
