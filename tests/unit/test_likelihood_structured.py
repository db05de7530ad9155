"""Closed-form Jacobians and the exponential / implicit integrators of rgdist.density.

Every closed-form piece is checked against autograd: the effective-action model's
circulant + diagonal Jacobian, the exact trace, the step Jacobians of the exponential and the
implicit step, and the log-density of the whole composed map. The exponential integrator
solves the Gaussian part exactly, so with the exact Gaussian score it samples p_{t_min}
exactly at ANY step count (checked against the analytic density). The implicit step has an
explicit inverse and stays a bijection where the explicit step of a confining force folds.
"""
import math

import numpy as np
import pytest
import torch

from rgdist.density import (
    Divergence,
    FlowField,
    GaussianScore,
    batched_jacobian,
    exponential_step,
    gaussian_log_density,
    implicit_inverse,
    implicit_step,
    ode_log_likelihood,
    ode_sample_with_logq,
    remainder_jacobian,
)
from rgdist.density.divergence import slogdet, solve
from rgdist.lattice import Lattice
from rgdist.models import build_model
from rgdist.rg import build_scheme

torch.set_num_threads(1)
M2 = 0.5


def gen(seed):
    return torch.Generator().manual_seed(seed)


def effective_model(lat, scheme, G, couplings, operators=("phi2", "grad2", "phi4", "phi6")):
    """GaussianExact effective-action model with time-dependent couplings set by hand
    (bias = ``couplings`` plus a small random time dependence)."""
    model = build_model("effective", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        operators=operators, generator=gen(1)).double()
    with torch.no_grad():
        model.net.head.weight.copy_(0.02 * torch.randn(model.net.head.weight.shape,
                                                       generator=gen(2), dtype=torch.float64))
        model.net.head.bias.copy_(torch.tensor(couplings, dtype=torch.float64))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def cubic_remainder(c):
    """A confining non-Gaussian remainder r = -c phi^3, with its closed-form Jacobian."""
    def rem(phi, t):
        return -c * phi**3

    def jac(phi, t):
        return torch.zeros_like(phi), -3 * c * phi * phi

    return rem, jac


# ------------------------------------------------------------------ closed-form Jacobians
@pytest.mark.parametrize("shape", [(6, 6), (4, 6), (8,)])
def test_effective_model_jacobian_and_trace_match_autograd(shape):
    lat = Lattice(shape)
    scheme = build_scheme("carosso", lat, T=5.0, mu2=0.1)
    G = lat.free_propagator(M2)
    model = effective_model(lat, scheme, G, [-0.2, 0.1, 0.3, 0.05])
    flow = FlowField(model, scheme)
    assert flow.structured and remainder_jacobian(model, scheme) is not None
    x = torch.randn(3, *shape, dtype=torch.float64, generator=gen(3))
    f_s, J_s = flow.with_jacobian(x, 1.3, 100)
    f_a, J_a = batched_jacobian(lambda z: flow(z, 1.3), x)
    assert torch.allclose(f_s, f_a, atol=1e-13)
    assert torch.allclose(J_s, J_a, rtol=0, atol=1e-11 * float(J_a.abs().max()))
    _, div, var = Divergence(flow, "trace", 1, "rademacher", None, 100)(x, 1.3)
    trace = J_a.diagonal(dim1=1, dim2=2).sum(-1)
    assert torch.allclose(div, trace, rtol=1e-12, atol=1e-10) and float(var.abs().max()) == 0
    # the same with the autograd path forced
    flow.rem_jac = None
    assert torch.allclose(flow.with_jacobian(x, 1.3, 100)[1], J_a, atol=1e-11)


def test_structured_jacobian_only_without_residual_net():
    lat = Lattice(4)
    scheme = build_scheme("carosso", lat)
    G = lat.free_propagator(M2)
    with_net = build_model("effective", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                           residual=True, residual_channels=2, residual_blocks=1)
    assert remainder_jacobian(with_net, scheme) is None and not FlowField(with_net, scheme).structured
    with pytest.raises(ValueError, match="residual"):
        with_net.net.score_jacobian(torch.zeros(1, 4, 4, dtype=torch.float64), 0.5)
    conv = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                       channels=2, blocks=1)
    assert remainder_jacobian(conv, scheme) is None
    plain = build_model("effective", lat, t_max=1.0)
    assert remainder_jacobian(plain, scheme) is not None  # the whole score is the remainder


# ------------------------------------------------------------------ exponential integrator
@pytest.mark.parametrize("name", ["carosso", "vp", "renormalized_polchinski"])
@pytest.mark.parametrize("n_steps", [3, 12])
def test_exponential_integrator_is_exact_for_gaussian_data(name, n_steps):
    """Exact Gaussian score: the map sends N(0, P_T) onto N(0, P_{t_min}) mode by mode; the
    returned log q equals that analytic density to round-off and the sample spectrum agrees
    with P_{t_min} (per-mode chi^2-type check over all modes)."""
    lat = Lattice(6)
    G = lat.free_propagator(M2)
    scheme = build_scheme(name, lat)
    n = 4096
    phi, log_q, info = ode_sample_with_logq(GaussianScore(scheme, G), scheme, n, n_steps=n_steps,
                                            generator=gen(4), method="discrete", grid="log",
                                            prior_G=G, integrator="exponential",
                                            return_info=True)
    t_min = float(info["times"][-1])
    P = scheme.marginal_spectrum(t_min, G).reshape(lat.shape)
    assert torch.allclose(log_q, gaussian_log_density(phi, P, lat), rtol=0, atol=1e-10)
    ratio = (lat.fft(phi).abs() ** 2).mean(0) / lat.volume / P
    # each |phi~(p)|^2 / (V P) is exponential (complex modes) or chi^2_1 (real ones): the mean
    # of the ratio over modes has error <= sqrt(2 / (n V)); 4 sigma
    assert abs(float(ratio.mean()) - 1) < 4 * math.sqrt(2 / (n * lat.volume))
    assert info["integrator"] == "exponential" and info["nfe"] == 0


@pytest.mark.parametrize("integrator", ["exponential", "implicit"])
def test_nonlinear_density_is_the_jacobian_of_the_composed_map(integrator):
    """Generic (autograd) nonlinear remainder on N = 4: log q = log p_T - log|det| of the
    Jacobian of the WHOLE map phi_T -> phi (autograd through every step, Newton included via
    its explicit inverse); the structured and generic paths agree; inverting gives it back."""
    lat = Lattice(4)
    G = lat.free_propagator(M2)
    scheme = build_scheme("carosso", lat, T=3.0, mu2=0.2)
    # the explicit step folds for a strong confining force (see the bijectivity test below):
    # keep it weak there, so that the sampled region has a single preimage
    rem, jac = cubic_remainder(0.2 if integrator == "implicit" else 0.02)
    structured = GaussianScore(scheme, G, rem, remainder_jacobian=jac)
    generic = GaussianScore(scheme, G, rem)
    kw = dict(n_steps=5, grid="log", prior_G=G, method="discrete", integrator=integrator)
    phi, log_q, info = ode_sample_with_logq(structured, scheme, 3, generator=gen(5),
                                            return_info=True, **kw)
    phi_g, log_q_g, info_g = ode_sample_with_logq(generic, scheme, 3, generator=gen(5),
                                                  return_info=True, **kw)
    assert torch.allclose(phi, phi_g, atol=1e-10) and torch.allclose(log_q, log_q_g, atol=1e-8)
    assert info["vjp"] == 0 and info_g["vjp"] > 0
    if integrator == "implicit":  # the inverse map is explicit, hence differentiable
        flow = FlowField(structured, scheme)
        grid = info["times"].tolist()

        def whole_map_inverse(y):  # phi -> phi_T
            z = y.reshape(1, *lat.shape)
            for t, s in zip(reversed(grid[:-1]), reversed(grid[1:])):
                E, W = flow.exp_coefficients(t, s, z)
                z = lat.ifft((lat.fft(z) - W * lat.fft(rem(z, s))) / E)
            return z.reshape(-1)

        for b in range(2):
            J = torch.autograd.functional.jacobian(whole_map_inverse, phi[b].reshape(-1))
            ref = info["log_prior"][b] + torch.linalg.slogdet(J)[1]
            assert abs(float(ref - log_q[b])) < 1e-8
    back, binfo = ode_log_likelihood(structured, scheme, phi, return_info=True, **kw)
    assert torch.allclose(back, log_q, rtol=0, atol=1e-8)
    assert torch.allclose(binfo["phi_T"], info["phi_T"], atol=1e-9)


def test_exponential_step_jacobian_matches_autograd():
    lat = Lattice(6)
    G = lat.free_propagator(M2)
    scheme = build_scheme("carosso", lat, T=5.0, mu2=0.1)
    model = effective_model(lat, scheme, G, [-0.1, 0.05, 0.2], ("phi2", "grad2", "phi4"))
    flow = FlowField(model, scheme)
    x = torch.randn(3, 6, 6, dtype=torch.float64, generator=gen(6))
    E, W = flow.exp_coefficients(1.3, 0.7, x)
    y, J, logabs, sign = exponential_step(flow, x, 1.3, 0.7)
    _, J_a = batched_jacobian(
        lambda z: lat.ifft(lat.fft(z) * E + lat.fft(flow.remainder(z, 1.3)) * W), x)
    assert torch.allclose(J, J_a, rtol=0, atol=1e-12)
    ref = torch.stack([torch.linalg.slogdet(a).logabsdet for a in J_a])
    assert torch.allclose(logabs, ref, atol=1e-10)


# ------------------------------------------------------------------ implicit integrator
def test_implicit_step_stays_bijective_where_the_explicit_step_folds():
    """Confining remainder r = -c phi^3. On uniform fields the explicit step acts as the
    cubic x -> E0 x - c W0 x^3 (E0, W0 the zero-mode coefficients): it folds (negative
    Jacobian determinant for |x| > sqrt(E0 / (3 c W0))), so a configuration can have three
    preimages and the change-of-variables density is wrong there. The implicit step's
    inverse x = E^-1 (y - W r(y)) has a positive definite Jacobian for a confining force:
    det > 0 everywhere and implicit_step(x(y)) = y, even far out."""
    lat = Lattice(4)
    G = lat.free_propagator(M2)
    scheme = build_scheme("carosso", lat, T=3.0, mu2=0.2)
    c = 2.0
    rem, jac = cubic_remainder(c)
    flow = FlowField(GaussianScore(scheme, G, rem, remainder_jacobian=jac), scheme)
    t, s = 1.0, 0.5
    E, W = flow.exp_coefficients(t, s, torch.zeros(1, 4, 4, dtype=torch.float64))
    e0, w0 = float(E[0, 0]), float(W[0, 0])
    x1 = 1.5 * math.sqrt(e0 / (3 * c * w0))                           # beyond the fold
    y1 = e0 * x1 - c * w0 * x1**3
    others = [r.real for r in np.roots([-c * w0, 0.0, e0, -y1])
              if abs(r.imag) < 1e-9 and abs(r.real - x1) > 1e-6]
    assert others                                                      # a second preimage
    xs = torch.tensor([x1, others[0]], dtype=torch.float64).reshape(2, 1, 1).expand(2, 4, 4)
    ys_exp = exponential_step(flow, xs.contiguous(), t, s, with_jacobian=False)[0]
    assert torch.allclose(ys_exp[0], ys_exp[1], atol=1e-10)           # not injective
    y = 3.0 * torch.ones(1, 4, 4, dtype=torch.float64)
    # implicit: explicit inverse, positive determinant, exact round trip
    ys = torch.cat([y, 5 * torch.randn(4, 4, 4, dtype=torch.float64, generator=gen(10))])
    x, logabs = implicit_inverse(flow, ys, t, s)
    y2, _, logabs2, sign = implicit_step(flow, x, t, s)
    assert torch.allclose(y2, ys, atol=1e-9) and torch.allclose(logabs, logabs2, atol=1e-9)
    assert bool((sign > 0).all()) and float(x[0].mean()) > 0


def test_overflowed_preimage_has_zero_density_not_nan():
    """The inverse of a confining implicit flow grows like x -> x + c W x^3 per step: far out
    the preimage overflows float64. Its prior density underflows, so log q = -inf (q = 0 to
    float range), never nan; a moderate configuration keeps a finite density."""
    lat = Lattice(4)
    G = lat.free_propagator(M2)
    scheme = build_scheme("carosso", lat, T=3.0, mu2=0.2)
    rem, jac = cubic_remainder(2.0)
    score = GaussianScore(scheme, G, rem, remainder_jacobian=jac)
    phi = torch.stack([torch.full((4, 4), 1e30, dtype=torch.float64),
                       0.3 * torch.ones(4, 4, dtype=torch.float64)])
    lq, info = ode_log_likelihood(score, scheme, phi, n_steps=12, method="discrete",
                                  integrator="implicit", prior_G=G, grid="log", return_info=True)
    assert not bool(torch.isfinite(info["phi_T"][0]).all())      # the preimage overflowed
    assert lq[0] == -math.inf and math.isfinite(float(lq[1]))


# ------------------------------------------------------------------ limits, linear algebra
def test_volume_limits_with_a_structured_jacobian():
    lat = Lattice(64)
    scheme = build_scheme("carosso", lat, T=2.0, mu2=0.1)
    G = lat.free_propagator(M2)
    model = effective_model(lat, scheme, G, [-0.05, 0.0, 0.05], ("phi2", "grad2", "phi4"))
    phi = lat.colored_noise(G, 2, gen(7))
    # closed-form exact divergence: any volume, no vector-Jacobian products
    lq, info = ode_log_likelihood(model, scheme, phi, n_steps=2, method="trace", prior_G=G,
                                  return_info=True)
    assert torch.isfinite(lq).all() and info["vjp"] == 0
    with pytest.raises(ValueError, match="V <= 1024.*trace"):
        ode_log_likelihood(model, scheme, phi, n_steps=2, method="discrete", prior_G=G)
    with pytest.raises(ValueError, match="integrator"):
        ode_log_likelihood(model, scheme, phi, n_steps=2, method="trace", prior_G=G,
                           integrator="rk5")
    # rk4 (continuous-time density, fourth order) also runs at any volume here
    lq4 = ode_log_likelihood(model, scheme, phi, n_steps=2, method="trace", prior_G=G,
                             integrator="rk4")
    assert torch.isfinite(lq4).all()
    with pytest.raises(ValueError, match="method='discrete'"):
        ode_log_likelihood(model, scheme, phi, n_steps=2, method="trace", prior_G=G,
                           integrator="implicit")


def test_batched_slogdet_and_solve_match_single_matrices():
    A = torch.randn(3, 256, 256, dtype=torch.float64, generator=gen(8)) + 20 * torch.eye(256)
    sign, logabs = slogdet(A)
    b = torch.randn(3, 256, 1, dtype=torch.float64, generator=gen(9))
    x = solve(A, b)
    for i in range(3):
        ref = torch.linalg.slogdet(A[i])
        assert float(sign[i]) == float(ref.sign) and abs(float(logabs[i] - ref.logabsdet)) < 1e-10
        assert torch.allclose(A[i] @ x[i], b[i], atol=1e-10)
