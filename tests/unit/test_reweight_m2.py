"""Reweighting in m2 (rgdist.analysis.reweight_m2) against the exact free theory.

Exact samples of the free field at m2 are drawn in momentum space: phi~(p) = sqrt(G(p)) eta~(p)
with eta unit white noise, G(p) = 1/(phat^2 + m2), phat^2 = sum_mu 4 sin^2(p_mu/2),
p_mu = 2 pi n_mu / N (rgdist.lattice.geometry), so <|phi~(p)|^2>/V = G(p) exactly.

Paper values used below (N = 8, d = 2, V = 64):
  * G2(p; m2) = 1/(phat^2 + m2); chi = V <M^2> = G2(0) = 1/m2; U = 0 (M is Gaussian);
    xi2^2 = (G(0)/G(p1) - 1)/phat^2(p1) = 1/m2 exactly.
  * f(m2) = -log Z(m2) = 1/2 sum_p log(phat^2 + m2) + const, so
    f(m2_1) - f(m2_0) = 1/2 sum_p log((phat^2 + m2_1)/(phat^2 + m2_0)).
  * Overlap: E = sum_x phi^2 = sum_p G2(p) has Var E = 2 sum_p G(p)^2 (~ 21 at m2 = 0.5), so
    reweighting by dm2 = 0.05 has sd(dS) = 0.025 sd(E) ~ 0.11 (ESS ~ 99 % of N), while
    m2 = 0.5 -> 5 has sd(dS) = 2.25 sd(E) ~ 10: ESS of a few configurations.

chi^2 over momenta: the independent modes are one representative of each pair {p, -p}
(34 of the 64 on 8x8: 30 pairs and the 4 self-conjugate momenta).  The reweighted G2 at
different modes are correlated only through the shared weights, at relative order
(dm2/2 G)^2 ~ 1e-3 here, so the diagonal chi^2 = sum (Ghat - G)^2/sigma^2 has mean dof and
standard deviation sqrt(2 dof) (up to O(1e-3) and the jackknife-variance noise, a factor
(B-1)/(B-3) ~ 1.02 on the mean with B = 100 bins); we require |chi^2 - dof| < 4 sqrt(2 dof).
"""
import math

import numpy as np
import pytest

from rgdist.analysis.reweight_m2 import (
    DS_DM2,
    MultiHistogram,
    config_data,
    default_min_ess,
    derived_observables,
    kish_ess,
    single_histogram,
)

N, D, V = 8, 2, 64


def phat2(n=N):
    s = 4 * np.sin(np.pi * np.arange(n) / n) ** 2
    return s[:, None] + s[None, :]


def free_fields(rng, n_conf, m2):
    """Exact free-field configurations (n_conf, N, N) at m2, drawn in momentum space."""
    g = 1.0 / (phat2() + m2)
    eta = rng.standard_normal((n_conf, N, N))
    return np.fft.ifftn(np.fft.fftn(eta, axes=(1, 2)) * np.sqrt(g), axes=(1, 2)).real


def unique_modes():
    """Mask of one representative of every pair {p, -p}."""
    idx = np.arange(V).reshape(N, N)
    neg = idx[np.ix_((-np.arange(N)) % N, (-np.arange(N)) % N)]
    return idx <= neg


def chi2_modes(est, exact):
    mask = unique_modes()
    z = (est.value[mask] - exact[mask]) / est.error[mask]
    return float(np.sum(z ** 2)), int(mask.sum())


def free_energy_exact(m2_a, m2_b):
    return 0.5 * float(np.sum(np.log((phat2() + m2_b) / (phat2() + m2_a))))


def ensemble(rng, n_conf, m2, full_g2=True):
    data = config_data(free_fields(rng, n_conf, m2), full_g2=full_g2)
    return data.pop("phi2_sum"), data


# ------------------------------------------------------------------ conventions
def test_action_is_linear_in_m2_with_half_phi2_sum():
    torch = pytest.importorskip("torch")
    from rgdist.lattice import Phi4Action

    phi = torch.randn(5, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    e = config_data(phi.numpy())["phi2_sum"]
    dS = (Phi4Action(0.7, 1.3)(phi) - Phi4Action(-0.4, 1.3)(phi)).numpy()
    np.testing.assert_allclose(dS, (0.7 + 0.4) * DS_DM2 * e, rtol=1e-12)


def test_config_data_and_observables_match_rgdist_measure():
    """Per-configuration data and the derived formulas against rgdist.measure (torch)."""
    torch = pytest.importorskip("torch")
    from rgdist.lattice import Lattice
    from rgdist.measure.observables import ensemble_observables, two_point

    rng = np.random.default_rng(3)
    lat = Lattice((6, 4))
    phi = rng.standard_normal((400, 6, 4)) + 0.3
    cd = config_data(phi, full_g2=True)
    g2_ref = two_point(torch.as_tensor(phi), lat).numpy()
    np.testing.assert_allclose(cd["g2"], g2_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cd["g2_p1"][:, 0], g2_ref[:, 1, 0], rtol=1e-12)
    np.testing.assert_allclose(cd["g2_p1"][:, 1], g2_ref[:, 0, 1], rtol=1e-12)
    m = cd["m"]
    means = {"m": m.mean(), "abs_m": np.abs(m).mean(), "m2": (m ** 2).mean(), "m4": (m ** 4).mean(),
             "g2": g2_ref.mean(0)}
    ref = ensemble_observables(means, lat)
    mine = derived_observables({**means, "g2_p1": cd["g2_p1"].mean(0)}, lat.shape)
    for key in ("chi", "chi_conn", "binder", "xi2", "m_R", "lambda_R", "Z"):
        np.testing.assert_allclose(mine[key], ref[key], rtol=1e-10, err_msg=key)
    # and through the reweighting at the data's own m2
    mh = MultiHistogram([0.3], [cd["phi2_sum"]], [{"m": m, "g2_p1": cd["g2_p1"]}], shape=(6, 4))
    obs = mh.observables(0.3)
    for key in ("chi", "binder", "xi2", "lambda_R"):
        np.testing.assert_allclose(obs[key].value, ref[key], rtol=1e-10, err_msg=key)


# ------------------------------------------------------------------ (a) single ensemble
@pytest.fixture(scope="module")
def free_05():
    return ensemble(np.random.default_rng(20240501), 20000, 0.5)


def test_identity_same_m2_returns_plain_average(free_05):
    e, data = free_05
    out = single_histogram(e, data, 0.5, 0.5)
    for key, value in data.items():
        assert np.array_equal(out[key], value.mean(0)), key
    mh = MultiHistogram([0.5], [e], [data], n_bins=50)
    assert mh.ess(0.5) == pytest.approx(len(e), rel=1e-12)
    np.testing.assert_allclose(mh.g2(0.5).value, data["g2"].mean(0), rtol=1e-12)
    # the multi-histogram of one ensemble is the single histogram
    np.testing.assert_allclose(mh.means([0.45, 0.55], ["g2"])["g2"],
                               single_histogram(e, data["g2"], 0.5, [0.45, 0.55]), rtol=1e-11)


def test_free_g2_reweighted_to_055_chi2_and_wrong_target_fails(free_05):
    e, data = free_05
    mh = MultiHistogram([0.5], [e], [data], n_bins=100)
    ess = mh.ess(0.55)
    assert 0.97 * len(e) < ess < len(e), ess  # sd(dS) ~ 0.11: ESS/N ~ exp(-0.012)
    est = mh.g2(0.55)
    chi2, dof = chi2_modes(est, 1.0 / (phat2() + 0.55))
    chi2_wrong, _ = chi2_modes(est, 1.0 / (phat2() + 0.5))
    band = 4 * math.sqrt(2 * dof)
    print(f"G2(p) at m2 = 0.55 from 0.5: chi2 = {chi2:.1f} / {dof} (band +-{band:.1f}); "
          f"wrong target 1/(phat^2 + 0.5): chi2 = {chi2_wrong:.1f}; ESS = {ess:.0f}; "
          f"sigma(G2(0)) = {est.error[0, 0]:.4f}")
    assert abs(chi2 - dof) < band
    assert chi2_wrong > dof + 3 * band  # paper: ~ 50 sum_unique G^2 ~ 700
    # scalar observables at 0.55: chi = 1/0.55, xi2 = 1/sqrt(0.55), U = 0
    obs = mh.observables(0.55)
    for key, exact in (("chi", 1 / 0.55), ("xi2", 1 / math.sqrt(0.55)), ("binder", 0.0)):
        pull = (obs[key].value - exact) / obs[key].error
        print(f"  {key}: {obs[key].value:.4f} +- {obs[key].error:.4f} (exact {exact:.4f}, pull {pull:+.2f})")
        assert abs(pull) < 4, key


# ------------------------------------------------------------------ (b) two ensembles
@pytest.fixture(scope="module")
def two_free():
    rng = np.random.default_rng(777)
    (e0, d0), (e1, d1) = ensemble(rng, 10000, 0.4), ensemble(rng, 10000, 0.6)
    return MultiHistogram([0.4, 0.6], [e0, e1], [d0, d1], n_bins=50)


def test_multi_histogram_free_energy_difference(two_free):
    mh = two_free
    fe = mh.free_energies()
    exact = free_energy_exact(0.4, 0.6)
    pull = (fe.value[1] - exact) / fe.error[1]
    ft = mh.free_energy([0.45, 0.5, 0.55])
    exact_t = np.array([free_energy_exact(0.4, m) for m in (0.45, 0.5, 0.55)])
    pulls_t = (ft.value - exact_t) / ft.error
    print(f"f(0.6) - f(0.4) = {fe.value[1]:.5f} +- {fe.error[1]:.5f} (exact {exact:.5f}, "
          f"pull {pull:+.2f}; {mh.n_iter} Newton steps); f(m2) - f(0.4) pulls {np.round(pulls_t, 2)}")
    assert fe.value[0] == 0 and fe.error[0] == 0
    assert abs(pull) < 4
    assert np.all(np.abs(pulls_t) < 4)
    # the wrong free energy (the zero mode dropped) is excluded
    wrong = exact - 0.5 * math.log(0.6 / 0.4)
    assert abs(fe.value[1] - wrong) / fe.error[1] > 20


def test_multi_histogram_observables_at_midpoint(two_free):
    mh = two_free
    assert mh.ess(0.5) > 0.9 * mh.n_total
    est = mh.g2(0.5)
    chi2, dof = chi2_modes(est, 1.0 / (phat2() + 0.5))
    chi2_wrong, _ = chi2_modes(est, 1.0 / (phat2() + 0.4))
    band = 4 * math.sqrt(2 * dof)
    print(f"G2(p) at m2 = 0.5 from 0.4 and 0.6: chi2 = {chi2:.1f} / {dof}; wrong (0.4): "
          f"{chi2_wrong:.1f}")
    assert abs(chi2 - dof) < band
    assert chi2_wrong > dof + 3 * band
    grid = np.linspace(0.4, 0.6, 5)
    obs = mh.observables(grid)
    for key, exact in (("chi", 1 / grid), ("xi2", 1 / np.sqrt(grid)), ("binder", 0 * grid)):
        pulls = (obs[key].value - exact) / obs[key].error
        print(f"  {key}: {np.round(obs[key].value, 4)} +- {np.round(obs[key].error, 4)} "
              f"pulls {np.round(pulls, 2)}")
        assert np.all(np.abs(pulls) < 4), key
    # equal statistical inefficiencies cancel exactly
    mh_tau = MultiHistogram(mh.m2, [mh._E[mh._ens == k] for k in range(2)], None,
                            tau_int=[3.0, 3.0], n_bins=4)
    np.testing.assert_allclose(mh_tau.f, mh.f, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ (c) overlap
def test_overlap_refusal_names_target_and_ess():
    e, data = ensemble(np.random.default_rng(5), 2000, 0.5, full_g2=False)
    mh = MultiHistogram([0.5], [e], [data], shape=(N, N))
    assert mh.min_ess == default_min_ess(2000) == 50
    ess = mh.ess(5.0)
    assert ess < 10  # sd(dS) ~ 10
    with pytest.raises(ValueError, match=r"m2 = 5\b.*effective sample size ESS = ") as info:
        mh.observables([0.5, 5.0])
    assert f"{ess:.3g}" in str(info.value) and "allow_extrapolation" in str(info.value)
    with pytest.raises(ValueError, match="m2 = 5"):
        single_histogram(e, data["m"], 0.5, 5.0)
    with pytest.raises(ValueError, match="m2 = 5"):
        mh.free_energy(5.0)
    out = mh.observables([0.5, 5.0], allow_extrapolation=True)
    assert np.all(np.isfinite(out["chi"].value))
    assert np.isfinite(single_histogram(e, data["m"], 0.5, 5.0, allow_extrapolation=True))
    # a neighbouring target is accepted; the threshold is adjustable
    mh.observables(0.55)
    with pytest.raises(ValueError, match="m2 = 0.55"):
        MultiHistogram([0.5], [e], [data], shape=(N, N), min_ess=0.999 * 2000).observables(0.55)
    assert default_min_ess(40) == 20 and default_min_ess(10 ** 6) == 10 ** 4
    np.testing.assert_allclose(kish_ess(np.log([1.0, 1.0, 2.0])), 16 / 6)


# ------------------------------------------------------------------ (d) error calibration
def test_jackknife_error_matches_spread_over_seeds():
    """40 independent data sets (2 x 1000 configurations at 0.4 and 0.6, 20 bins each).

    The sample sd over S = 40 seeds has relative noise 1/sqrt(2 (S-1)) = 0.11; the rms
    jackknife error (20 + 20 bins, averaged over the seeds) ~ 0.02.  A ratio within a factor
    1.5 (|log r| < 0.405) is a ~3.5 sigma band, while an error that ignored the reweighting
    or the f_k solve would be off by more (for f(0.6) - f(0.4) it would be 0).
    """
    vals, errs = [], []
    for s in range(40):
        rng = np.random.default_rng(1000 + s)
        (e0, d0), (e1, d1) = (ensemble(rng, 1000, m, full_g2=False) for m in (0.4, 0.6))
        mh = MultiHistogram([0.4, 0.6], [e0, e1], [d0, d1], shape=(N, N), n_bins=20)
        obs = mh.observables(0.5)
        fe = mh.free_energies()
        vals.append([obs["chi"].value, obs["xi2"].value, fe.value[1]])
        errs.append([obs["chi"].error, obs["xi2"].error, fe.error[1]])
    vals, errs = np.array(vals), np.array(errs)
    spread = vals.std(0, ddof=1)
    rms = np.sqrt((errs ** 2).mean(0))
    exact = np.array([2.0, math.sqrt(2.0), free_energy_exact(0.4, 0.6)])
    pulls = (vals.mean(0) - exact) / (spread / math.sqrt(len(vals)))
    print(f"spread over seeds {np.round(spread, 5)}, rms jackknife {np.round(rms, 5)}, ratio "
          f"{np.round(spread / rms, 3)}; mean pulls {np.round(pulls, 2)} (chi, xi2, df)")
    assert np.all(np.abs(np.log(spread / rms)) < math.log(1.5))
    assert np.all(np.abs(pulls) < 4)


# ------------------------------------------------------------------ input validation
@pytest.mark.parametrize("kwargs, match", [
    (dict(m2=[0.4, 0.4]), "duplicate"),
    (dict(m2=[0.4, float("nan")]), r"m2\[1\]"),
    (dict(phi2_sum=[np.ones(10)]), "one array per ensemble"),
    (dict(phi2_sum=[np.ones(10), -np.ones(10)]), r"phi2_sum\[1\]"),
    (dict(data=[{"m": np.ones(10)}, {"m": np.ones(9)}]), r"data\[1\]\['m'\]"),
    (dict(data=[{"m": np.ones(10)}, {"x": np.ones(10)}]), "keys"),
    (dict(n_bins=1), "n_bins"),
    (dict(bins=[np.zeros(10, int), np.arange(10)]), "fewer than 2 jackknife bins"),
    (dict(bins=[np.zeros(10), np.arange(10)]), "integer"),
    (dict(tau_int=[0.5, -1.0]), "tau_int"),
    (dict(shape=(8,)), None),
    (dict(shape=(1, 8)), "shape"),
    (dict(min_ess=-1), "min_ess"),
])
def test_bad_input_raises_value_error(kwargs, match):
    args = dict(m2=[0.4, 0.6], phi2_sum=[np.ones(10), np.ones(10)],
                data=[{"m": np.zeros(10)}, {"m": np.zeros(10)}])
    args.update(kwargs)
    if match is None:  # valid
        MultiHistogram(args.pop("m2"), args.pop("phi2_sum"), args.pop("data"), **args)
        return
    with pytest.raises(ValueError, match=match):
        MultiHistogram(args.pop("m2"), args.pop("phi2_sum"), args.pop("data"), **args)


def test_bad_calls_raise_value_error():
    e, data = ensemble(np.random.default_rng(9), 200, 0.5, full_g2=False)
    mh = MultiHistogram([0.5], [e], [data])
    with pytest.raises(ValueError, match="shape"):
        mh.observables(0.5)
    with pytest.raises(ValueError, match="lacks"):
        mh.g2(0.5)
    with pytest.raises(ValueError, match="target m2"):
        mh.means([[0.5]])
    with pytest.raises(ValueError, match="target m2"):
        mh.ess(float("inf"))
    with pytest.raises(ValueError, match="obs"):
        single_histogram(e, np.ones(3), 0.5, 0.5)
    with pytest.raises(ValueError, match="m2_from"):
        single_histogram(e, data["m"], "x", 0.5)
    with pytest.raises(ValueError, match="observables need data"):
        MultiHistogram([0.5], [e], None, shape=(N, N)).observables(0.5)


# ------------------------------------------------------------------ review fixes and diagnostics
def test_solver_accepts_convergence_in_exactly_max_iter_steps(two_free):
    """n_iter Newton steps suffice, so max_iter = n_iter must converge (it used to raise)."""
    mh = two_free
    assert mh.n_iter >= 2
    e = [mh._E[mh._ens == k] for k in range(2)]
    exact = MultiHistogram(mh.m2, e, None, n_bins=4, max_iter=mh.n_iter)
    assert exact.n_iter == mh.n_iter
    np.testing.assert_array_equal(exact.f, mh.f)
    with pytest.raises(ValueError, match="did not converge in"):
        MultiHistogram(mh.m2, e, None, n_bins=4, max_iter=mh.n_iter - 1)


def test_jackknife_of_a_mean_with_unequal_bins_is_exact():
    """For a plain mean the delete-m_j jackknife is sum_b n_b (xbar_b - xbar)^2 / (B (N - n_b))."""
    x = np.random.default_rng(4).standard_normal(1000)
    bins = np.repeat(np.arange(7), [50, 100, 150, 200, 250, 150, 100])
    mh = MultiHistogram([0.5], [np.abs(x)], [{"x": x}], bins=[bins])
    est = mh.estimate(lambda m: m["x"], 0.5)
    xbar = np.array([x[bins == b].mean() for b in range(7)])
    n_b = np.bincount(bins)
    exact = math.sqrt(np.sum(n_b * (xbar - x.mean()) ** 2 / (1000 - n_b)) / 7)
    assert est.value == pytest.approx(x.mean(), rel=1e-12)
    assert est.error == pytest.approx(exact, rel=1e-10)
    np.testing.assert_allclose(est.covariance(), [[exact ** 2]], rtol=1e-10)


def test_overlap_matrix_separates_overlapping_from_disjoint_ensembles(two_free):
    o = two_free.overlap()
    np.testing.assert_allclose(o.sum(1), 1.0, rtol=1e-12)
    assert np.all(o[0, 1] > 0.3) and np.all(o[1, 0] > 0.3)  # 0.4 and 0.6 on 8x8 overlap well
    # on 32x32, E at 0.4 and 1.5 lies ~ 7 sd apart: the matrix is ~ the identity
    rng = np.random.default_rng(11)
    n, g = 32, None
    s = 4 * np.sin(np.pi * np.arange(n) / n) ** 2
    es = []
    for m2 in (0.4, 1.5):
        g = 1.0 / (s[:, None] + s[None, :] + m2)
        eta = rng.standard_normal((500, n, n))
        phi = np.fft.ifftn(np.fft.fftn(eta, axes=(1, 2)) * np.sqrt(g), axes=(1, 2)).real
        es.append(np.sum(phi ** 2, axis=(1, 2)))
    disjoint = MultiHistogram([0.4, 1.5], es, None, n_bins=5).overlap()
    print(f"overlap 8x8 (0.4, 0.6): {np.round(o, 3).tolist()}; 32x32 (0.4, 1.5): "
          f"{np.round(disjoint, 4).tolist()}")
    assert np.all(np.diag(disjoint) > 0.99)


def test_target_of_a_wrong_type_is_a_value_error():
    mh = MultiHistogram([0.5], [np.ones(10)], None)
    for bad in (object(), {"m2": 0.5}, ["a", "b"], b"0.5"):
        with pytest.raises(ValueError, match="target m2"):
            mh.ess(bad)


def test_reweighting_is_exported_from_rgdist_analysis():
    import rgdist.analysis as analysis
    from rgdist.analysis import reweight_m2

    for name in set(reweight_m2.__all__) - {"MIN_ESS_ABS", "MIN_ESS_FRAC"}:
        assert getattr(analysis, name) is getattr(reweight_m2, name), name
        assert name in analysis.__all__, name
