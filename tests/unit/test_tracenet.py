"""Exact-divergence score model (rgdist.models.TraceScore) and the RK4 density integrator.

* tr(M ds/dphi) in closed form = the trace of the autograd Jacobian (float64, 1e-10 relative),
  for the plain divergence and for the solver's mode filters, alone and inside the
  Gaussian-exact wrapper; the model is odd, translation equivariant, and its parameters do
  not depend on N (a model built at N = 8 loads into N = 16).
* Free theory: with the exact Gaussian score expressed in the family (reference spectrum =
  the free propagator, corrections at their initial 0), the probability-flow log-density
  with the exact trace (RK4) equals the analytic Gaussian log-density at t_min to 1e-6 per
  site, for every scheme at its class defaults, N = 8 and 16; step halving shows 4th order.
"""
import math

import pytest
import torch

from rgdist.density import (
    batched_jacobian,
    gaussian_log_density,
    ode_log_likelihood,
    ode_sample_with_logq,
    remainder_trace,
)
from rgdist.lattice import Lattice
from rgdist.models import GaussianExactScore, build_model, load_named_arrays, named_arrays
from rgdist.rg import SCHEMES, build_scheme

torch.set_num_threads(1)
M2 = 0.5


def randomized(model, seed=3, scale=0.3):
    """Perturb every parameter, so no term of the model is at its zero initialization."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def circulant(lat, m):
    V = lat.volume
    return lat.filter(torch.eye(V, dtype=torch.float64).reshape(V, *lat.shape), m).reshape(V, V)


@pytest.mark.parametrize("radius,global_channels", [(1, 2), (2, 0), (None, 1)])
def test_trace_equals_autograd(radius, global_channels):
    lat = Lattice(8)
    sch = build_scheme("carosso", lat)
    model = randomized(build_model("trace", lat, scheme=sch, channels=3, radius=radius,
                                   global_channels=global_channels))
    g = torch.Generator().manual_seed(5)
    phi = 1.5 * torch.randn(3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.01, 0.7, 12.0], dtype=torch.float64)
    _, J = batched_jacobian(lambda z: model(z, t), phi)
    for m in (None, -0.5 * sch.beta2(0.3) * (1 + lat.phat2())):
        s, tr = model.divergence(phi, t, m)
        M = torch.eye(lat.volume, dtype=torch.float64) if m is None else circulant(lat, m)
        ref = (M * J).sum((1, 2))  # tr(M J), M symmetric
        assert torch.equal(s, model(phi, t))
        assert float(((tr.detach() - ref).abs() / ref.abs().clamp_min(1.0)).max()) < 1e-10
        assert float(tr.detach().abs().min()) > 1.0  # not a trivially small check


def test_trace_inside_gaussian_exact_wrapper():
    lat = Lattice(8)
    sch = build_scheme("vp", lat)
    G = lat.free_propagator(M2)
    net = randomized(build_model("trace", lat, scheme=sch, channels=2))
    model = GaussianExactScore(net, sch, G)
    trace = remainder_trace(model, sch)
    assert trace is not None
    phi = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    m = -0.5 * sch.beta2(0.4)
    r, tr = trace(phi, t, m)
    rem = lambda z: model(z, t) - sch.gaussian_score(z, t, G)  # noqa: E731
    _, J = batched_jacobian(rem, phi)
    ref = (circulant(lat, m) * J).sum((1, 2))
    assert torch.allclose(r, rem(phi), rtol=0, atol=1e-12 * float(r.abs().max()))
    assert float(((tr.detach() - ref).abs() / ref.abs()).max()) < 1e-10


def test_symmetries_and_any_lattice_size():
    lat = Lattice(8)
    sch = build_scheme("carosso", lat)
    model = randomized(build_model("trace", lat, scheme=sch))
    phi = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0.5, 3.0], dtype=torch.float64)
    s = model(phi, t)
    assert torch.equal(model(-phi, t), -s)
    shifted = model(torch.roll(phi, (3, 5), (1, 2)), t)
    assert float((shifted - torch.roll(s, (3, 5), (1, 2))).abs().max()) < 1e-12 * float(s.abs().max())
    big = build_model("trace", Lattice(16), scheme=build_scheme("carosso", Lattice(16)))
    load_named_arrays(big, {k: v for k, v in named_arrays(model).items() if k != "reference"}
                      | {"reference": named_arrays(big)["reference"]})
    phi16 = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert bool(torch.isfinite(big(phi16, torch.tensor([1.0], dtype=torch.float64))).all())


def test_bad_arguments():
    lat = Lattice(8)
    with pytest.raises(ValueError, match="scheme"):
        build_model("trace", lat)
    sch = build_scheme("carosso", lat)
    with pytest.raises(ValueError, match="channels"):
        build_model("trace", lat, scheme=sch, channels=-1)
    with pytest.raises(ValueError, match="reference_spectrum"):
        build_model("trace", lat, scheme=sch, reference_spectrum=torch.zeros(8, 8))


# (grid, RK4 steps) per scheme at its class defaults: the Polchinski flow is stiff at late times
# (alpha ~ e^(2T) phat^2/Lambda0^2), so it needs the SNR grid and more steps
FREE_CASES = {"carosso": ("log", 100), "polchinski": ("snr", 600),
              "renormalized_polchinski": ("uniform", 50), "ve": ("uniform", 200),
              "vp": ("uniform", 50)}


def exact_gaussian_model(sch, G):
    return build_model("trace", sch.lattice, scheme=sch, reference_spectrum=G)


@pytest.mark.parametrize("N", (8, 16))
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_free_theory_ode_density_is_the_gaussian(name, N):
    lat = Lattice(N)
    G = lat.free_propagator(M2)
    sch = build_scheme(name, lat)
    model = exact_gaussian_model(sch, G)
    t_min = sch.default_t_min
    P = sch.marginal_spectrum(t_min, G)
    phi = lat.colored_noise(P, 16, torch.Generator().manual_seed(1))
    grid, n = FREE_CASES[name]
    log_q = ode_log_likelihood(model, sch, phi, n_steps=n, method="trace", integrator="rk4",
                               grid=grid, prior_G=G)
    exact = gaussian_log_density(phi, P, lat)
    assert float((log_q - exact).abs().max()) / lat.volume < 1e-6


def test_rk4_is_fourth_order_and_sampling_agrees():
    lat = Lattice(8)
    G = lat.free_propagator(M2)
    sch = build_scheme("carosso", lat)
    model = exact_gaussian_model(sch, G)
    P = sch.marginal_spectrum(sch.default_t_min, G)
    phi = lat.colored_noise(P, 8, torch.Generator().manual_seed(2))
    exact = gaussian_log_density(phi, P, lat)
    errs = [float((ode_log_likelihood(model, sch, phi, n_steps=n, method="trace",
                                      integrator="rk4", grid="log", prior_G=G) - exact).abs().max())
            for n in (20, 40)]
    assert 10 < errs[0] / errs[1] < 24  # 2^4 = 16
    # the sampler's own log q of its draws: exact Gaussian density of where they land
    x, log_q = ode_sample_with_logq(model, sch, 64, n_steps=100, grid="log", method="trace",
                                    integrator="rk4", prior_G=G,
                                    generator=torch.Generator().manual_seed(3))
    assert float((log_q - gaussian_log_density(x, P, lat)).abs().max()) / lat.volume < 1e-6


def test_rk4_needs_a_continuous_method():
    lat = Lattice(4)
    sch = build_scheme("vp", lat)
    model = build_model("trace", lat, scheme=sch)
    with pytest.raises(ValueError, match="rk4"):
        ode_log_likelihood(model, sch, torch.zeros(1, 4, 4, dtype=torch.float64), n_steps=4,
                           method="discrete", integrator="rk4")
