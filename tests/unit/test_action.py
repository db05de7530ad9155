"""Phi4Action and Lattice: closed-form force vs autograd, hopping parametrization, input checks."""
import math

import pytest
import torch

from rgdist.lattice import (
    Lattice,
    Phi4Action,
    check_couplings,
    hopping_to_standard,
    standard_to_hopping,
)


def _random_field(shape, seed, batch=3):
    g = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn((batch, *shape), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(8, 8), (6, 8), (5, 3), (4, 4, 4), (4, 6, 5), (7,)])
@pytest.mark.parametrize("m2,lam", [(0.5, 0.0), (-1.27, 1.0), (2.0, 0.3)])
def test_force_is_minus_gradient(shape, m2, lam):
    action = Phi4Action(m2, lam, d=len(shape))
    phi = _random_field(shape, seed=len(shape) * 100 + int(10 * lam)).requires_grad_(True)
    (grad,) = torch.autograd.grad(action(phi).sum(), phi)
    force = action.force(phi.detach())
    torch.testing.assert_close(force, -grad, rtol=0, atol=1e-12)


def test_action_by_hand_constant_and_plane_wave():
    lat = Lattice((6, 8))
    action = Phi4Action(0.7, 0.4)
    c = 1.3
    const = torch.full((1, 6, 8), c, dtype=torch.float64)
    expected = lat.volume * (0.5 * 0.7 * c**2 + 0.25 * 0.4 * c**4)
    assert action(const).item() == pytest.approx(expected, rel=1e-14)
    # kinetic term of cos(p.x): 1/2 phi (-Laplacian) phi = phat^2 / 2 * sum cos^2 = phat^2 V / 4
    x, y = torch.meshgrid(torch.arange(6.0, dtype=torch.float64),
                          torch.arange(8.0, dtype=torch.float64), indexing="ij")
    p = (2 * math.pi * 1 / 6, 2 * math.pi * 3 / 8)
    wave = torch.cos(p[0] * x + p[1] * y)[None]
    phat2 = 4 * math.sin(p[0] / 2) ** 2 + 4 * math.sin(p[1] / 2) ** 2
    assert action.kinetic(wave).item() == pytest.approx(phat2 * lat.volume / 4, rel=1e-12)


def _hopping_action(phi, kappa, lam_h, d):
    """S = sum_x [ -2 kappa sum_mu phi_x phi_{x+mu} + (1 - 2 lam_h) phi_x^2 + lam_h phi_x^4 ]."""
    dims = tuple(range(1, phi.dim()))
    hop = sum((phi * torch.roll(phi, -1, ax)).sum(dims) for ax in range(1, d + 1))
    return -2 * kappa * hop + ((1 - 2 * lam_h) * phi**2 + lam_h * phi**4).sum(dims)


@pytest.mark.parametrize("d,shape", [(2, (8, 8)), (2, (6, 8)), (3, (4, 5, 6))])
@pytest.mark.parametrize("kappa,lam_h", [(0.18, 0.02), (0.27, 1.1), (0.1, 0.0)])
def test_hopping_action_equals_standard_action(d, shape, kappa, lam_h):
    m2, lam = hopping_to_standard(kappa, lam_h, d)
    phi_hop = _random_field(shape, seed=7)
    s_hop = _hopping_action(phi_hop, kappa, lam_h, d)
    s_std = Phi4Action(m2, lam, d)(math.sqrt(2 * kappa) * phi_hop)
    torch.testing.assert_close(s_hop, s_std, rtol=1e-12, atol=1e-12)
    a = Phi4Action.from_hopping(kappa, lam_h, d)
    assert (a.m2, a.lam) == (m2, lam)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("m2,lam", [(0.5, 0.0), (-1.27, 1.0), (-5.0, 0.5), (-7.9, 3.0), (3.0, 1e-3)])
def test_standard_hopping_round_trip(d, m2, lam):
    if lam == 0 and m2 + 2 * d <= 0:
        pytest.skip("no hopping form")
    kappa, lam_h = standard_to_hopping(m2, lam, d)
    assert kappa > 0 and lam_h >= 0
    m2_back, lam_back = hopping_to_standard(kappa, lam_h, d)
    assert m2_back == pytest.approx(m2, rel=1e-12, abs=1e-12)
    assert lam_back == pytest.approx(lam, rel=1e-12, abs=1e-15)
    assert Phi4Action(m2, lam, d).to_hopping() == (kappa, lam_h)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("kappa,lam_h", [(0.18, 0.02), (0.27, 1.1), (0.1, 0.0), (2.0, 0.4)])
def test_hopping_standard_round_trip(d, kappa, lam_h):
    m2, lam = hopping_to_standard(kappa, lam_h, d)
    kappa_back, lam_h_back = standard_to_hopping(m2, lam, d)
    assert kappa_back == pytest.approx(kappa, rel=1e-12)
    assert lam_h_back == pytest.approx(lam_h, rel=1e-12, abs=1e-15)


def test_phat2_and_free_propagator_by_hand():
    lat = Lattice(4)
    phat2 = lat.phat2()
    assert phat2.shape == (4, 4)
    assert phat2[0, 0].item() == 0.0
    assert phat2[1, 0].item() == pytest.approx(2.0, abs=1e-14)   # 4 sin^2(pi/4)
    assert phat2[2, 2].item() == pytest.approx(8.0, abs=1e-14)   # 4 + 4
    assert phat2[3, 1].item() == pytest.approx(4.0, abs=1e-14)   # 2 + 2
    lat = Lattice((6, 8))
    assert lat.phat2()[1, 2].item() == pytest.approx(3.0, abs=1e-14)  # 4 sin^2(pi/6) + 4 sin^2(pi/4)
    g = lat.free_propagator(0.5)
    assert g[1, 2].item() == pytest.approx(1 / 3.5, rel=1e-14)
    assert g[0, 0].item() == pytest.approx(2.0, rel=1e-14)
    assert g[3, 4].item() == pytest.approx(1 / 8.5, rel=1e-14)
    lat3 = Lattice(4, d=3)
    assert lat3.phat2()[1, 1, 2].item() == pytest.approx(8.0, abs=1e-14)


@pytest.mark.parametrize("call,name", [
    (lambda: Lattice(1), "N[0] must"),
    (lambda: Lattice((4, 1)), "N[1] must"),
    (lambda: Lattice(4, d=0), "d must"),
    (lambda: Lattice((4, 4), d=3), "d=3"),
    (lambda: Phi4Action(0.5, -0.1), "lam"),
    (lambda: Phi4Action(0.0, 0.0), "m2"),
    (lambda: Phi4Action(-1.0, 0.0), "m2"),
    (lambda: Phi4Action(float("nan"), 1.0), "m2"),
    (lambda: Phi4Action(0.5, float("inf")), "lam"),
    (lambda: Phi4Action(float("-inf"), 1.0), "m2"),
    (lambda: Phi4Action(0.5, 1.0, d=0), "d must"),
    (lambda: check_couplings("x", 1.0), "m2"),
    (lambda: hopping_to_standard(0.0, 0.1, 2), "kappa"),
    (lambda: hopping_to_standard(float("nan"), 0.1, 2), "kappa"),
    (lambda: hopping_to_standard(0.1, -0.1, 2), "lam_h"),
    (lambda: standard_to_hopping(0.5, -1.0, 2), "lam"),
    (lambda: standard_to_hopping(-5.0, 0.0, 2), "m2"),
    (lambda: Lattice(4).free_propagator(0.0), "m2"),
    (lambda: Phi4Action(0.5, 1.0)(torch.zeros(4, 4, dtype=torch.float64)), "phi"),
    (lambda: Phi4Action(0.5, 1.0).force(torch.zeros(2, 4, 4, 4, dtype=torch.float64)), "phi"),
    (lambda: Phi4Action(0.5, 1.0)([[1.0]]), "phi"),
    (lambda: Lattice(4).check_field(torch.zeros(2, 4, 5)), "phi"),
    (lambda: Lattice(4).check_field(torch.zeros(4, 4)), "phi"),
])
def test_bad_input_raises_value_error_naming_parameter(call, name):
    with pytest.raises(ValueError) as info:
        call()
    assert name in str(info.value)
