"""RG-flow measurements (rgdist.flow) against the exact free theory.

Free theory lam = 0, m2 = 0.5: exact samples from Lattice.colored_noise(G), G = 1/(phat^2 + m2).
The forward flow of Gaussian data is Gaussian with spectrum S_t = A_t^2 G + Sigma_t, so every
measured flow has a closed form (gaussian_flow). Tolerances: each comparison is a pull
(measured - expected)/sigma with the jackknife sigma; with ~40 correlated pulls per test the
bound is 4 sigma (family-wise false-alarm rate well below 1%), while the wrong closed forms
and wrong scores below miss by far more than that.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rgdist.flow import (
    OBSERVABLES,
    FlowAccumulator,
    FlowResult,
    accumulate_forward_flow,
    compare_flows,
    deviation_summary,
    forward_flow,
    flow_snapshots,
    gaussian_couplings,
    gaussian_flow,
    learned_couplings,
    learned_flow,
    merged_grid,
)
from rgdist.lattice import Lattice
from rgdist.measure import ObservableAccumulator
from rgdist.rg import build_scheme

torch.set_num_threads(1)

M2 = 0.5
N_CONFIGS = 2048
N_BINS = 32
TOL = 4.0
SCHEMES = {
    # heat-kernel RG: A_T <= exp(-0.1*40) = 0.018; m_R flows from sqrt(m2) to sqrt(mu2)
    "carosso": (dict(T=40.0, mu2=0.1), [0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 40.0]),
    # Polchinski with IR mass: every mode collapses and m_R(t) falls (xi2 grows). T = 2 keeps
    # the spread of 1/S_T(p) over momenta at ~1e12, within float64 for the reverse sampler
    "polchinski": (dict(T=2.0, Lambda0=4.0, m02=1.0, mu2=0.5), [0.0, 0.5, 1.0, 1.5, 1.75, 2.0]),
}
SCALARS = ["m_R", "Z", "chi", "xi2", "binder", "lambda_R"]


@pytest.fixture(scope="module", params=[8, 16], ids=["N8", "N16"])
def free(request):
    N = request.param
    lat = Lattice(N)
    G = lat.free_propagator(M2)
    configs = lat.colored_noise(G, N_CONFIGS, torch.Generator().manual_seed(100 + N))
    return lat, G, configs


class _DropSigma:
    """A scheme whose marginal spectrum forgets the noise: S_t = A_t^2 G (a wrong closed form)."""

    def __init__(self, scheme):
        self._s = scheme

    def __getattr__(self, name):
        return getattr(self._s, name)

    def marginal_spectrum(self, t, G):
        return torch.exp(2 * self._s.log_A(t)) * G


@pytest.mark.parametrize("name", list(SCHEMES))
def test_forward_flow_matches_gaussian_closed_form(free, name):
    lat, G, configs = free
    params, t_grid = SCHEMES[name]
    scheme = build_scheme(name, lat, **params)
    ex = forward_flow(configs, scheme, t_grid, generator=torch.Generator().manual_seed(7),
                      n_bins=N_BINS)
    ga = gaussian_flow(lat, scheme, G, t_grid)
    assert (ex.kind, ga.kind) == ("forward", "gaussian")
    devs = compare_flows(ga, ex, SCALARS)
    worst = deviation_summary(devs)
    assert max(worst.values()) < TOL, worst
    # the flow is visible on the grid: m_R(T) differs from m_R(0) by many sigma
    m, e = ex["m_R"]
    assert abs(m[-1] - m[0]) > 5 * math.hypot(e[0], e[-1])
    # G2(p; t) per momentum at a middle time: pulls are O(1)
    k = len(t_grid) // 2
    g_dev = compare_flows(ga, ex, ["g2"])["g2"][k]
    assert np.nanmean(g_dev ** 2) < 2.0 and np.nanmean(g_dev ** 2) > 0.4
    assert np.nanmax(np.abs(g_dev)) < 5.0
    # a wrong closed form (Sigma_t dropped) is detected
    wrong = gaussian_flow(lat, _DropSigma(scheme), G, t_grid)
    bad = deviation_summary(compare_flows(wrong, ex, ["m_R", "Z", "chi"]))
    assert min(bad.values()) > 2 * TOL, bad


def test_gaussian_flow_identities():
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    ga = gaussian_flow(lat, scheme, G, [0.0, 40.0], L_phys=2.0)
    # t = 0: xi2^2 = 1/m2 exactly, Z = m2 G(0) = 1, chi = G(0), U = lambda_R = 0
    assert ga["m_R"][0][0] == pytest.approx(math.sqrt(M2), rel=1e-12)
    assert ga["Z"][0][0] == pytest.approx(1.0, rel=1e-12)
    assert ga["chi"][0][0] == pytest.approx(1 / M2, rel=1e-12)
    assert ga["binder"][0][0] == 0 and ga["lambda_R"][0][0] == 0
    # t = T: S_T ~ 1/(2 (phat^2 + mu2)), so m_R -> sqrt(mu2) up to A_T^2 corrections
    assert ga["m_R"][0][1] == pytest.approx(math.sqrt(0.1), rel=2e-3)
    # physical units: m_R L = 8 m_R; m_R_phys = m_R N / L_phys
    assert np.allclose(ga["m_R_L"][0], 8 * ga["m_R"][0], rtol=1e-14)
    assert np.allclose(ga["m_R_phys"][0] * 2.0, ga["m_R_L"][0], rtol=1e-14)
    assert np.all(ga["m_R"][1] == 0)


def test_physical_units_of_measured_flow():
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    configs = lat.colored_noise(G, 256, torch.Generator().manual_seed(3))
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    kw = dict(generator=torch.Generator().manual_seed(4), n_bins=8)
    res = forward_flow(configs, scheme, [0.0, 1.0], L_phys=8.0, **kw)
    v, e = res["m_R"]
    assert np.allclose(res["m_R_phys"][0], v) and np.allclose(res["m_R_phys"][1], e)  # L_phys = N
    assert np.allclose(res["m_R_L"][0], 8 * v) and np.allclose(res["m_R_L"][1], 8 * e)
    res2 = forward_flow(configs, scheme, [0.0, 1.0], L_phys=4.0,
                        generator=torch.Generator().manual_seed(4), n_bins=8)
    assert np.allclose(res2["m_R_phys"][0], 2 * v)                                   # a = 1/2
    assert np.allclose(res2["m_R_phys"][0] * 4.0, res2["m_R_L"][0])


def test_forward_flow_at_t0_is_the_data_and_chunks_merge():
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    configs = lat.colored_noise(G, 300, torch.Generator().manual_seed(5))
    scheme = build_scheme("polchinski", lat, T=2.5, Lambda0=4.0, m02=1.0, mu2=0.1)
    bins = torch.arange(300) % 10
    direct = ObservableAccumulator(lat, 10).update(configs, bins).to_arrays()

    def streams(c):
        return torch.Generator().manual_seed(1000 + c)

    t_grid = [0.0, 1.0, 2.5]
    full, snaps = accumulate_forward_flow(configs, scheme, t_grid, generator=streams, n_bins=10,
                                          batch_size=64, n_keep=2)
    for key, value in direct.items():
        np.testing.assert_allclose(full.to_arrays()[f"k000/{key}"], value, rtol=1e-12)
    assert snaps.shape == (3, 2, 8, 8) and np.allclose(snaps[0], configs[:2].numpy())
    # two "ranks" with disjoint chunks, merged, equal the single pass
    a, _ = accumulate_forward_flow(configs, scheme, t_grid, generator=streams, n_bins=10,
                                   batch_size=64, chunks=[0, 2, 4])
    b, _ = accumulate_forward_flow(configs, scheme, t_grid, generator=streams, n_bins=10,
                                   batch_size=64, chunks=[1, 3])
    merged = FlowAccumulator.from_arrays(lat, a.to_arrays()).merge(b)
    for key, value in full.to_arrays().items():
        np.testing.assert_allclose(merged.to_arrays()[key], value, rtol=1e-12, atol=1e-300)
    assert FlowAccumulator.reduction("k001/max_abs") == "max"
    assert FlowAccumulator.reduction("k001/sum_g2") == "sum"
    # FlowResult round trip through named arrays
    res = merged.result(None, None, snapshots=snaps)
    back = FlowResult.from_arrays(res.to_arrays())
    assert back.names == res.names and np.array_equal(back.t, res.t)
    for n in res.names:
        np.testing.assert_array_equal(back[n][0], res[n][0])
        np.testing.assert_array_equal(back[n][1], res[n][1])
    np.testing.assert_array_equal(back.snapshots, snaps)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_learned_flow_with_exact_gaussian_score(name):
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    params, t_grid = SCHEMES[name]
    scheme = build_scheme(name, lat, **params)
    configs = lat.colored_noise(G, N_CONFIGS, torch.Generator().manual_seed(11))
    ex = forward_flow(configs, scheme, t_grid, generator=torch.Generator().manual_seed(12),
                      n_bins=N_BINS)

    def run(score_G, seed):
        return learned_flow(lambda phi, t: scheme.gaussian_score(phi, t, score_G), scheme,
                            N_CONFIGS, t_grid, n_steps=20, generator=torch.Generator().manual_seed(seed),
                            batch_size=1024, n_bins=N_BINS, prior_G=G, n_keep=1)

    le = run(G, 13)
    worst = deviation_summary(compare_flows(ex, le))
    assert max(worst.values()) < TOL, worst
    assert le.snapshots.shape == (len(t_grid), 1, 8, 8)
    # the score of a different theory (m2 = 2 instead of 0.5) fails the comparison
    wrong = run(lat.free_propagator(2.0), 14)
    bad = deviation_summary(compare_flows(ex, wrong, ["m_R", "chi"]))
    assert bad["m_R"] > TOL and bad["chi"] > 2 * TOL, bad


def test_merged_grid_contains_flow_times():
    lat = Lattice(4)
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    t = np.array([0.0, 0.37, 40.0])
    g = merged_grid(scheme, t, 10, "log")
    assert g[0] == 40.0 and g[-1] == 0.0 and bool((g[1:] < g[:-1]).all())
    assert any(abs(float(x) - 0.37) < 1e-15 for x in g)
    assert len(g) == 10 + 1 + 2  # 0.37 and 0 inserted, T shared


def test_couplings_gaussian_prediction():
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    car = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    for w in ("sigma", "likelihood", "none"):
        c = gaussian_couplings(lat, car, G, [0.0, 40.0], weighting=w)
        # t = 0: 1/G = phat^2 + m2 is linear -> the standard action, c_phi2 = m2/2, c_grad2 = 1/2
        assert c["phi2"][0] == pytest.approx(M2 / 2, rel=1e-10)
        assert c["grad2"][0] == pytest.approx(0.5, rel=1e-10)
        assert c["rel_residual"][0] < 1e-12
        # t = T: S -> 1/(2 (phat^2 + mu2)): c_phi2 -> mu2, c_grad2 -> 1
        assert c["phi2"][1] == pytest.approx(0.1, rel=2e-3)
        assert c["grad2"][1] == pytest.approx(1.0, rel=2e-3)
    # renormalized Polchinski keeps Gaussian data with G = C stationary: constant couplings
    rp = build_scheme("renormalized_polchinski", lat, T=3.0, Lambda0=4.0, m02=0.7, mu2=0.1)
    c = gaussian_couplings(lat, rp, lat.free_propagator(0.7), [0.0, 0.5, 3.0])
    np.testing.assert_allclose(c["phi2"], 0.35, rtol=1e-9)
    np.testing.assert_allclose(c["grad2"], 0.5, rtol=1e-9)
    # an intermediate time: the closed-form fit equals a brute-force weighted lstsq
    t = 1.0
    c = gaussian_couplings(lat, car, G, [t], weighting="sigma")
    S = car.marginal_spectrum(t, G).numpy().ravel()
    w = (car.Sigma(t).numpy().ravel() * S)
    x = lat.phat2().numpy().ravel()
    A = np.stack([np.ones_like(x), x], 1) * np.sqrt(w)[:, None]
    (a, b), *_ = np.linalg.lstsq(A, np.sqrt(w) / S, rcond=None)
    assert c["phi2"][0] == pytest.approx(a / 2, rel=1e-9)
    assert c["grad2"][0] == pytest.approx(b / 2, rel=1e-9)
    assert c["rel_residual"][0] > 1e-3  # 1/S_t is not linear at intermediate t
    # the "sigma" weight at t = 0 is the t -> 0 limit
    c0 = gaussian_couplings(lat, car, lat.free_propagator(0.3) * (1 + 0.1 * lat.phat2()),
                            [0.0, 1e-9])
    assert c0["phi2"][0] == pytest.approx(c0["phi2"][1], rel=1e-6)
    with pytest.raises(ValueError, match="weighting"):
        gaussian_couplings(lat, car, G, [1.0], weighting="dsm")


def test_couplings_gaussian_prediction_with_zero_mode_weight():
    """The zero-mode weight of the loss enters the fit: at t = 0 (1/G exactly linear) the fit
    is exact for any weight; at t = 1 a weight b = 1e6 makes the fit pass through the zero mode,
    K(0) S_t(0) = 1 up to (sum of the other weights)/(b w_0) ~ V/b; b = 1 leaves it off by the
    curvature of 1/S_t."""
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    car = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    S0 = float(car.marginal_spectrum(1.0, G)[0, 0])
    miss = {}
    for b in (1.0, 1e6):
        c = gaussian_couplings(lat, car, G, [0.0, 1.0], weighting="sigma", zero_mode_weight=b)
        assert c["phi2"][0] == pytest.approx(M2 / 2, rel=1e-10)
        assert c["grad2"][0] == pytest.approx(0.5, rel=1e-10)
        miss[b] = abs(2 * c["phi2"][1] * S0 - 1)
    assert miss[1.0] > 1e-3 and miss[1e6] < 1e-3 * miss[1.0], miss
    with pytest.raises(ValueError, match="zero_mode_weight"):
        gaussian_couplings(lat, car, G, [1.0], zero_mode_weight=0.0)


def test_learned_couplings_reads_the_model():
    from rgdist.models import EffectiveActionScore

    lat = Lattice(4)
    model = EffectiveActionScore(lat, operators=("phi2", "grad2", "phi4"), t_max=10.0)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.25, 0.5, 0.1], dtype=torch.float64))
    out = learned_couplings(model, [0.0, 2.0, 10.0], T=10.0)
    direct = model.couplings(torch.tensor([0.0, 2.0, 10.0], dtype=torch.float64))
    for name in ("phi2", "grad2", "phi4"):
        np.testing.assert_allclose(out[name], direct[name].detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(out["phi2"], 0.25)
    with pytest.raises(ValueError, match="running couplings"):
        learned_couplings(torch.nn.Linear(1, 1), [0.0])


def test_bad_inputs():
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    configs = lat.colored_noise(G, 16, torch.Generator().manual_seed(1))
    scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
    kw = dict(generator=torch.Generator().manual_seed(2), n_bins=4)
    with pytest.raises(ValueError, match=r"t_grid\[1\] = 41.0 lies outside \[0, T=40.0\]"):
        forward_flow(configs, scheme, [0.0, 41.0], **kw)
    with pytest.raises(ValueError, match=r"t_grid\[0\] = -0.5"):
        gaussian_flow(lat, scheme, G, [-0.5])
    with pytest.raises(ValueError, match="m_R.*unknown.*'mass'"):
        forward_flow(configs, scheme, [0.0], observables=["m_R", "mass"], **kw)
    with pytest.raises(ValueError, match="does not match the scheme's lattice"):
        forward_flow(Lattice(4).colored_noise(Lattice(4).free_propagator(1.0), 8), scheme, [0.0], **kw)
    with pytest.raises(ValueError, match="does not match the scheme's lattice"):
        gaussian_flow(Lattice(4), scheme, G, [0.0])
    with pytest.raises(ValueError, match="needs L_phys"):
        forward_flow(configs, scheme, [0.0], observables=["m_R_phys"], **kw)
    with pytest.raises(ValueError, match="L_phys"):
        forward_flow(configs, scheme, [0.0], L_phys=-1.0, **kw)
    with pytest.raises(ValueError, match="repeat"):
        forward_flow(configs, scheme, [1.0, 1.0], **kw)
    with pytest.raises(ValueError, match="bins"):
        forward_flow(configs, scheme, [0.0], bins=np.zeros(5, dtype=int), **kw)
    with pytest.raises(ValueError, match="n_bins"):
        forward_flow(configs, scheme, [0.0], generator=torch.Generator(), n_bins=0)
    with pytest.raises(ValueError, match="generator"):
        forward_flow(configs, scheme, [0.0], generator=3, n_bins=4)
    with pytest.raises(ValueError, match="solver"):
        learned_flow(lambda p, t: -p, scheme, 8, [0.0], n_steps=2, generator=torch.Generator(),
                     solver="rk4")
    a = gaussian_flow(lat, scheme, G, [0.0, 1.0])
    b = gaussian_flow(lat, scheme, G, [0.0, 2.0])
    with pytest.raises(ValueError, match="different t grids"):
        compare_flows(a, b)
    with pytest.raises(ValueError, match="not in both"):
        compare_flows(a, gaussian_flow(lat, scheme, G, [0.0, 1.0], observables=["chi"]), ["Z"])
    assert set(OBSERVABLES) >= {"m_R", "Z", "lambda_R", "chi", "binder", "g2", "xi2", "m_R_L"}


def test_flow_snapshots_shapes():
    lat = Lattice(6)
    configs = lat.colored_noise(lat.free_propagator(1.0), 4, torch.Generator().manual_seed(0))
    scheme = build_scheme("carosso", lat, T=10.0, mu2=0.1)
    s = flow_snapshots(configs, scheme, [10.0, 0.0], generator=torch.Generator().manual_seed(1),
                       n_keep=3)
    assert s.shape == (2, 3, 6, 6)
    assert np.allclose(s[0], configs[:3].numpy())          # sorted: t = 0 first, is the data
    assert s[1].std() < s[0].std()                           # smoothed and damped at t = 10
