"""Mixture proposals and the defensive mixture (rgdist.correct.mixture).

Free theory (everything Gaussian, exact answers known): a proposal narrower than the target
has unbounded weights (no finite bound exists, log_weight_bound raises); mixing in a wide
Gaussian bounds them (every draw's log w below B - log eps) and MH / reweighting recover the
exact chi = 1/m2 and U = 0. The bound itself is checked against configurations built to
maximize log w.
"""
import math

import pytest
import torch

from rgdist.correct import (GaussianProposal, MixtureProposal, WeightedAccumulator,
                          defensive_mixture, independence_mh, log_weight_bound, log_weights)
from rgdist.density import gaussian_log_density
from rgdist.lattice import Lattice, Phi4Action

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_mixture_density_labels_and_component_laws():
    lat = Lattice(4)
    C1, C2 = lat.free_propagator(2.0), lat.free_propagator(0.2)
    mix = MixtureProposal([GaussianProposal(lat, C1), GaussianProposal(lat, C2)], [3.0, 1.0])
    assert mix.weights.tolist() == pytest.approx([0.75, 0.25])
    n = 20000
    phi, log_q = mix.sample(n, gen(1))
    direct = torch.logsumexp(torch.stack([
        math.log(0.75) + gaussian_log_density(phi, C1, lat),
        math.log(0.25) + gaussian_log_density(phi, C2, lat)]), 0)
    assert torch.allclose(log_q, direct, rtol=0, atol=1e-12)
    assert torch.allclose(mix.log_prob(phi), log_q, rtol=0, atol=1e-12)
    # labels: binomial count within 4 sigma; each component's draws have its own variance
    labels = mix.last_labels
    k2 = int((labels == 1).sum())
    assert abs(k2 - 0.25 * n) < 4 * math.sqrt(n * 0.25 * 0.75)
    V = lat.volume
    for k, C in ((0, C1), (1, C2)):
        m = phi[labels == k].mean((1, 2))
        var, exact = float((m * m).mean()), float(C[0, 0]) / V
        # var of a chi^2_1 mean: sqrt(2/n) relative
        assert abs(var / exact - 1) < 4 * math.sqrt(2 / m.numel())
    # the mixture density is normalized: E_{q2}[q_mix / q2] = 1
    x, lq2 = GaussianProposal(lat, C2).sample(n, gen(2))
    r = torch.exp(mix.log_prob(x) - lq2)
    assert abs(float(r.mean()) - 1) < 4 * float(r.std()) / math.sqrt(n)
    # same generator seed -> same draws
    phi2, _ = mix.sample(n, gen(1))
    assert torch.equal(phi, phi2)


def test_defensive_mixture_bounds_the_weights_and_is_exact():
    lat = Lattice(6)
    m2 = 0.5
    action = Phi4Action(m2, 0.0)
    narrow = GaussianProposal(lat, lat.free_propagator(1.5))
    with pytest.raises(ValueError, match="unbounded"):
        log_weight_bound(action, lat, narrow.spectrum)
    wide = lat.free_propagator(0.3)
    eps = 0.3
    mix = defensive_mixture(narrow, lat, wide, eps)
    B = log_weight_bound(action, lat, wide) - math.log(eps)
    phi, log_q = mix.sample(16384, gen(3))
    lw = log_weights(phi, log_q, action)
    assert float(lw.max()) <= B
    # the narrow proposal alone exceeds that bound on the wide draws (the bound is not vacuous)
    wide_draws = phi[mix.last_labels == 1]
    lw_narrow = log_weights(wide_draws, narrow.log_prob(wide_draws), action)
    assert float(lw_narrow.max()) > B
    rw = WeightedAccumulator(lat, 32).update(phi, lw, torch.arange(16384) % 32).estimate()
    res = independence_mh(mix, action, lat, 128, 150, generator=gen(4), burn_in=20)
    for est in (rw, res.estimates):
        assert abs(est["chi"][0] - 1 / m2) < 4 * est["chi"][1]
        assert abs(est["binder"][0]) < 4 * est["binder"][1]


def test_log_weight_bound_holds_at_the_worst_configurations():
    lat = Lattice(4)
    action = Phi4Action(-1.0, 1.0)
    C = lat.free_propagator(0.4)
    B = log_weight_bound(action, lat, C)
    # constant fields phi = v maximize sum_x [b phi^2/2 - lam phi^4/4] at v^2 = b/lam (zero
    # mode: phat^2 = 0, where 1/C - phat^2 is largest for a free-propagator C)
    v = torch.linspace(-3, 3, 601, dtype=torch.float64)
    const = v.view(-1, 1, 1).expand(-1, 4, 4).clone()
    lw = -action.action(const) - gaussian_log_density(const, C, lat)
    assert float(lw.max()) <= B + 1e-9
    b = 0.4 + 1.0
    assert float(lw.max()) == pytest.approx(B, abs=lat.volume * 1e-3)  # attained at v^2 = b
    noisy = torch.randn(4096, 4, 4, generator=gen(5), dtype=torch.float64) * 1.5
    lw = -action.action(noisy) - gaussian_log_density(noisy, C, lat)
    assert float(lw.max()) <= B
    assert B == pytest.approx(lat.volume * b * b / 4 + 0.5 * float(torch.log(2 * math.pi * C).sum()))


def test_mixture_bad_input():
    lat = Lattice(4)
    g = GaussianProposal(lat, lat.free_propagator(1.0))

    class NoLogProb:
        def sample(self, n, generator):
            return g.sample(n, generator)

    with pytest.raises(ValueError, match="log_prob"):
        MixtureProposal([g, NoLogProb()], [0.5, 0.5])
    with pytest.raises(ValueError, match="entries"):
        MixtureProposal([g, g], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        MixtureProposal([g, g], [1.0, 0.0])
    with pytest.raises(ValueError, match="non-empty"):
        MixtureProposal([], [])
    for bad in (0.0, 1.0, -0.2, "x"):
        with pytest.raises(ValueError, match="defensive fraction"):
            defensive_mixture(g, lat, lat.free_propagator(1.0), bad)
    with pytest.raises(ValueError, match="n must be"):
        MixtureProposal([g], [1.0]).sample(0, gen(0))


def test_pareto_k_recovers_known_tails():
    from rgdist.correct import pareto_k

    # w = u^-xi (u uniform) is Pareto with tail shape xi; 10 replicas of n = 16384
    for xi in (0.3, 0.8):
        ks = torch.tensor([pareto_k(-xi * torch.log(torch.rand(16384, generator=gen(10 + r),
                                                                dtype=torch.float64)))
                           for r in range(10)])
        sd = float(ks.std())
        assert sd < 0.15 and abs(float(ks.mean()) - xi) < 4 * sd / math.sqrt(10), (xi, ks)
    # bounded weights: negative shape; the fit ignores the scale of w; too few weights: nan
    lw = torch.log(torch.rand(8192, generator=gen(20), dtype=torch.float64))
    assert pareto_k(lw) < 0
    assert pareto_k(lw + 1234.5) == pytest.approx(pareto_k(lw), abs=1e-9)
    assert math.isnan(pareto_k(lw[:24]))
    assert pareto_k(torch.cat([lw, torch.full((100,), -math.inf, dtype=torch.float64)])) == \
        pytest.approx(pareto_k(lw), abs=1e-12)
