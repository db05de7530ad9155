"""Per-configuration observables and ensemble formulas (rgdist.measure.observables)."""
import math

import numpy as np
import pytest
import torch

from rgdist.lattice.geometry import Lattice
from rgdist.measure import observables as obs

torch.set_num_threads(1)


def plane_wave(lattice, k, amplitude=1.0):
    """cos(p_k . x) with p_k = 2 pi k / N, as a batch of one: phase = sum_mu k_mu p_mu(x_mu)."""
    phase = sum(ki * p for ki, p in zip(k, lattice.momenta()))
    return amplitude * torch.cos(phase).unsqueeze(0)


def free_means(lattice, m2):
    """Exact free-theory moments: g2 = 1/(phat^2 + m2), <M^2> = G(0)/V, M Gaussian."""
    g2 = lattice.free_propagator(m2).numpy()
    mm2 = g2[(0,) * lattice.d] / lattice.volume
    return {"m": 0.0, "abs_m": math.sqrt(2 * mm2 / math.pi), "m2": mm2, "m4": 3 * mm2 ** 2, "g2": g2}


# --- per configuration -------------------------------------------------------------
def test_magnetization_and_max_abs():
    phi = torch.tensor([[[1.0, -3.0], [2.0, 4.0]], [[0.5, 0.5], [0.5, -0.5]]], dtype=torch.float64)
    torch.testing.assert_close(obs.magnetization(phi), torch.tensor([1.0, 0.25], dtype=torch.float64))
    torch.testing.assert_close(obs.max_abs(phi), torch.tensor([4.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="phi"):
        obs.magnetization(torch.zeros(3))
    with pytest.raises(ValueError, match="phi"):
        obs.max_abs(np.zeros((2, 2)))


@pytest.mark.parametrize("shape,k", [((8, 8), (1, 2)), ((8, 8), (4, 0)), ((6, 10), (0, 3)),
                                     ((4, 6, 8), (1, 0, 3))])
def test_two_point_of_plane_wave_peaks_at_plus_minus_k(shape, k):
    lattice = Lattice(shape)
    amp = 1.7
    g2 = obs.two_point(plane_wave(lattice, k, amp), lattice)[0]
    expected = torch.zeros(shape, dtype=torch.float64)
    plus = tuple(ki % n for ki, n in zip(k, shape))
    minus = tuple(-ki % n for ki, n in zip(k, shape))
    # cos = (e^{ipx} + e^{-ipx})/2: |phi~(+-k)|^2 = (V amp/2)^2, over V -> V amp^2/4 each
    expected[plus] += lattice.volume * amp ** 2 / 4
    expected[minus] += lattice.volume * amp ** 2 / 4 if minus != plus else 0.0
    if minus == plus:  # k = -k (Nyquist or zero): a single peak of V amp^2
        expected[plus] = lattice.volume * amp ** 2
    torch.testing.assert_close(g2, expected, atol=1e-12, rtol=0)


def test_two_point_zero_mode_and_parseval():
    lattice = Lattice((6, 4))
    g = torch.Generator().manual_seed(0)
    phi = lattice.white_noise(5, g)
    g2 = obs.two_point(phi, lattice)
    assert g2.shape == (5, 6, 4) and g2.dtype == torch.float64
    torch.testing.assert_close(g2[:, 0, 0], lattice.volume * obs.magnetization(phi) ** 2)
    torch.testing.assert_close(g2.sum((1, 2)), (phi ** 2).sum((1, 2)))
    assert obs.two_point(phi.float(), lattice).dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        obs.two_point(torch.zeros(2, 4, 6), lattice)


# --- ensemble formulas -------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (16, 16), (8, 12), (4, 6, 8), (32,)])
@pytest.mark.parametrize("m2", [0.04, 0.5])
def test_free_propagator_gives_exact_xi2_chi_z_lambda(shape, m2):
    lattice = Lattice(shape)
    out = obs.ensemble_observables(free_means(lattice, m2), lattice)
    assert out["xi2"] == pytest.approx(1 / math.sqrt(m2), rel=1e-12)
    assert out["m_R"] == pytest.approx(math.sqrt(m2), rel=1e-12)
    assert out["chi"] == pytest.approx(1 / m2, rel=1e-12)
    assert out["Z"] == pytest.approx(1.0, rel=1e-12)
    assert out["binder"] == pytest.approx(0.0, abs=1e-14)
    assert out["lambda_R"] == pytest.approx(0.0, abs=1e-10)
    assert out["chi_conn"] == pytest.approx((1 - 2 / math.pi) / m2, rel=1e-12)


def test_formulas_broadcast_over_replicas_and_match_closed_forms():
    lattice = Lattice(8)
    means = free_means(lattice, 0.3)
    scale = np.array([1.0, 1.3, 0.7])
    m4 = np.array([2.0, 2.5, 3.5]) * means["m2"] ** 2
    stacked = {"m": np.zeros(3), "abs_m": np.full(3, means["abs_m"]), "m2": np.full(3, means["m2"]),
               "m4": m4, "g2": means["g2"][None] * scale[:, None, None]}
    out = obs.ensemble_observables(stacked, lattice)
    assert out["xi2"].shape == (3,)
    np.testing.assert_allclose(out["xi2"], 1 / math.sqrt(0.3), rtol=1e-12)  # scale cancels
    np.testing.assert_allclose(out["binder"], 1 - m4 / (3 * means["m2"] ** 2), rtol=1e-13)
    n_over_xi = 8 * math.sqrt(0.3)
    np.testing.assert_allclose(out["lambda_R"], (3 - m4 / means["m2"] ** 2) * n_over_xi ** 2, rtol=1e-12)
    assert obs.binder_cumulant(1.0, 1.0) == pytest.approx(2 / 3)  # M = +-1


def test_ill_defined_xi2_gives_nan_not_exception():
    lattice = Lattice(8)
    means = free_means(lattice, 0.3)
    bad = dict(means, g2=means["g2"].copy())
    bad["g2"][1, 0] = bad["g2"][0, 1] = 2 * means["g2"][0, 0]  # G2(p1) > G2(0): xi2^2 < 0
    zero = dict(means, g2=means["g2"].copy())
    zero["g2"][1, 0] = zero["g2"][0, 1] = 0.0  # G2(p1) = 0: xi2^2 = inf
    for m in (bad, zero):
        out = obs.ensemble_observables(m, lattice)
        for key in ("xi2", "m_R", "lambda_R", "Z"):
            assert math.isnan(out[key]), key
        assert math.isfinite(out["chi"]) and math.isfinite(out["binder"])


def test_non_square_lattice_averages_per_axis_estimates():
    lattice = Lattice((6, 10))
    g2 = np.ones((6, 10))
    g2[0, 0] = 3.0
    g2[1, 0], g2[0, 1] = 1.5, 2.0
    expected = ((3 / 1.5 - 1) / (4 * math.sin(math.pi / 6) ** 2)
                + (3 / 2.0 - 1) / (4 * math.sin(math.pi / 10) ** 2)) / 2
    assert obs.xi2_squared(g2, lattice) == pytest.approx(expected, rel=1e-14)
    square = Lattice(6)
    g2s = np.ones((6, 6))
    g2s[0, 0], g2s[1, 0], g2s[0, 1] = 3.0, 1.5, 2.0  # square: average G2(p1) first
    assert obs.xi2_squared(g2s, square) == pytest.approx((3 / 1.75 - 1) / 1.0, rel=1e-14)
    with pytest.raises(ValueError, match="lattice shape"):
        obs.xi2_squared(np.ones((6, 6)), lattice)


def test_ensemble_observables_requires_all_moments():
    lattice = Lattice(4)
    means = free_means(lattice, 1.0)
    del means["m4"]
    with pytest.raises(ValueError, match="m4"):
        obs.ensemble_observables(means, lattice)


def test_to_physical_mass():
    assert obs.to_physical_mass(0.25, 16, 2.0) == pytest.approx(2.0)
    np.testing.assert_allclose(obs.to_physical_mass(np.array([0.1, 0.2]), 10, 5), [0.2, 0.4])
    with pytest.raises(ValueError, match="L_phys"):
        obs.to_physical_mass(0.1, 8, 0.0)
    with pytest.raises(ValueError, match="N must"):
        obs.to_physical_mass(0.1, 0, 1.0)
