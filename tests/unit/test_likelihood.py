"""Model log-densities of the probability-flow sampler (rgdist.density).

Checked against exact results: the Gaussian density against a dense multivariate normal;
the ODE log-likelihood of the free theory (exact Gaussian score) against the analytic
density of p_{t_min}; the discrete-map density against the closed-form per-mode Heun gains
and, for a nonlinear score, against the Jacobian of the whole composed map; Hutchinson
against the exact trace (z-scores from the reported variance).
"""
import copy
import math

import pytest
import torch

from rgdist.density import (
    GaussianScore,
    batched_jacobian,
    gaussian_log_density,
    ode_log_likelihood,
    ode_sample_with_logq,
    split_score,
)
from rgdist.lattice import Lattice
from rgdist.rg import build_scheme
from rgdist.sample import solve

torch.set_num_threads(1)

M2 = 0.5
T_MIN = 1e-3


def gen(seed):
    return torch.Generator().manual_seed(seed)


def free_setup(n=8):
    lat = Lattice(n)
    G = lat.free_propagator(M2)
    scheme = build_scheme("carosso", lat)
    return lat, G, scheme


def exact_score(scheme, G):
    """The exact Gaussian score as an opaque callable (the generic, autograd code path)."""
    return lambda phi, t: scheme.gaussian_score(phi, t, G)


def circulant(lat, spectrum):
    V = lat.volume
    E = torch.eye(V, dtype=torch.float64).reshape(V, *lat.shape)
    return lat.filter(E, spectrum).reshape(V, V)


def nonlinear_remainder(phi, t):
    """An odd, translation-equivariant, time-dependent non-Gaussian remainder."""
    u = phi + 0.5 * torch.roll(phi, 1, -1) - 0.25 * torch.roll(phi, -1, -2)
    return 0.3 * torch.tanh(u) ** 3 / (1 + t.reshape(-1, *([1] * (phi.dim() - 1))))


# ------------------------------------------------------------------ Gaussian density
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6,)])
def test_gaussian_log_density_matches_dense_normal(shape):
    lat = Lattice(shape)
    spectrum = 1.0 / (lat.phat2() + 0.7) + 0.1 * lat.phat2() ** 2
    C = circulant(lat, spectrum)
    mvn = torch.distributions.MultivariateNormal(torch.zeros(lat.volume, dtype=torch.float64), C)
    phi = lat.colored_noise(spectrum, 5, gen(0))
    ours = gaussian_log_density(phi, spectrum, lat)
    ref = mvn.log_prob(phi.reshape(5, -1))
    assert torch.allclose(ours, ref, rtol=0, atol=1e-10)


def test_batched_jacobian_matches_autograd():
    x = torch.randn(3, 4, 4, dtype=torch.float64, generator=gen(1))

    def fn(z):
        return torch.tanh(z * torch.roll(z, 1, -1)) + z.mean((1, 2), keepdim=True) ** 2

    y, J = batched_jacobian(fn, x, max_rows=5)  # several chunks
    for b in range(3):
        ref = torch.autograd.functional.jacobian(lambda z: fn(z.reshape(1, 4, 4)).reshape(-1),
                                                 x[b].reshape(-1))
        assert torch.allclose(J[b], ref, atol=1e-13)
    assert torch.allclose(y, fn(x))


# ------------------------------------------------------------------ free theory
def test_free_theory_ode_likelihood_matches_analytic_density():
    """Exact Gaussian score, Carosso scheme, N = 8: |log q - log p_{t_min}| < 1e-3 per site."""
    lat, G, scheme = free_setup()
    phi0 = lat.colored_noise(G, 16, gen(2))
    analytic = gaussian_log_density(phi0, scheme.marginal_spectrum(T_MIN, G), lat)
    kw = dict(n_steps=100, method="trace", grid="log", t_min=T_MIN, prior_G=G)
    generic = ode_log_likelihood(exact_score(scheme, G), scheme, phi0, **kw)
    err = float((generic - analytic).abs().max()) / lat.volume
    assert err < 1e-3
    # the closed-form Gaussian path is the same function
    split = ode_log_likelihood(GaussianScore(scheme, G), scheme, phi0, **kw)
    assert torch.allclose(split, generic, rtol=0, atol=1e-8)
    # and the error is the O(h^2) of Heun, not a constant offset
    coarse = ode_log_likelihood(GaussianScore(scheme, G), scheme, phi0, **{**kw, "n_steps": 50})
    err_coarse = float((coarse - analytic).abs().max()) / lat.volume
    assert 2.5 < err_coarse / err < 5.5


def test_free_theory_sampling_logq_matches_analytic_density():
    lat, G, scheme = free_setup()
    phi, log_q, info = ode_sample_with_logq(exact_score(scheme, G), scheme, 16, n_steps=100,
                                            generator=gen(3), method="trace", grid="log",
                                            t_min=T_MIN, prior_G=G, return_info=True)
    analytic = gaussian_log_density(phi, scheme.marginal_spectrum(T_MIN, G), lat)
    assert float((log_q - analytic).abs().max()) / lat.volume < 1e-3
    assert info["nfe"] == 200 and info["vjp"] == 200 * lat.volume


def test_discrete_density_is_exact_for_the_sampler_run():
    """Linear flow: the discrete map multiplies mode p by prod_k g_k(p); log q is then the
    Gaussian density of spectrum S_T prod g^2, to round-off, for ANY number of steps."""
    lat, G, scheme = free_setup()
    n_steps = 12
    for score in (exact_score(scheme, G), GaussianScore(scheme, G)):
        phi, log_q, info = ode_sample_with_logq(score, scheme, 32, n_steps=n_steps,
                                                generator=gen(4), method="discrete",
                                                grid="log", prior_G=G, return_info=True)
        times = info["times"].tolist()
        gain = torch.ones(lat.shape, dtype=torch.float64)
        for t, s in zip(times[:-1], times[1:]):
            k = [-scheme.alpha(u) + 0.5 * scheme.beta2(u) / scheme.marginal_spectrum(u, G)
                 for u in (t, s)]
            h = t - s
            gain = gain * (1 - 0.5 * h * (k[0] + k[1] * (1 - h * k[0])))
        ref = gaussian_log_density(phi, scheme.prior_spectrum(G) * gain**2, lat)
        assert torch.allclose(log_q, ref, rtol=0, atol=1e-9)
        # the configurations are those of the package's Heun solver
        ref_phi, _ = solve(score, scheme, info["phi_T"], info["times"], solver="heun_ode",
                           denoise=False)
        assert torch.allclose(phi, ref_phi, rtol=0, atol=1e-12)
        assert info["n_nonpositive_det"] == 0
        # inverting the discrete map gives the same density at the same points
        back = ode_log_likelihood(score, scheme, phi, n_steps=n_steps, method="discrete",
                                  grid="log", prior_G=G)
        assert torch.allclose(back, log_q, rtol=0, atol=1e-9)


def test_discrete_density_nonlinear_matches_whole_map_jacobian():
    """Nonlinear remainder on N = 4: the per-step product of Jacobians equals the Jacobian of
    the composed map, the generic and split code paths agree, Newton inverts the map."""
    lat = Lattice(4)
    G = lat.free_propagator(M2)
    scheme = build_scheme("carosso", lat)
    split = GaussianScore(scheme, G, nonlinear_remainder)
    generic = lambda phi, t: split(phi, t)  # noqa: E731  (opaque: autograd through FFTs)
    kw = dict(n_steps=6, grid="log", prior_G=G)
    phi, log_q, info = ode_sample_with_logq(split, scheme, 4, generator=gen(5), method="discrete",
                                            return_info=True, **kw)
    phi_g, log_q_g = ode_sample_with_logq(generic, scheme, 4, generator=gen(5),
                                          method="discrete", **kw)
    assert torch.allclose(phi, phi_g, atol=1e-12) and torch.allclose(log_q, log_q_g, atol=1e-9)
    times = info["times"]

    def velocity(x, t):  # an independent, differentiable probability-flow velocity
        tb = torch.full((1,), t, dtype=torch.float64)
        X = -scheme.alpha(t) * lat.fft(x) - 0.5 * scheme.beta2(t) * lat.fft(generic(x, tb))
        return lat.ifft(X)

    def whole_map(x_T):
        x = x_T.reshape(1, *lat.shape)
        grid = times.tolist()
        for t, s in zip(grid[:-1], grid[1:]):
            f1 = velocity(x, t)
            x = x - 0.5 * (t - s) * (f1 + velocity(x - (t - s) * f1, s))
        return x.reshape(-1)

    assert torch.allclose(whole_map(info["phi_T"][0]), phi[0].reshape(-1), atol=1e-12)
    for b in range(2):
        with torch.enable_grad():
            J = torch.autograd.functional.jacobian(whole_map, info["phi_T"][b].reshape(-1))
        ref = info["log_prior"][b] - torch.linalg.slogdet(J)[1]
        assert abs(float(ref - log_q[b])) < 1e-9
    back, binfo = ode_log_likelihood(split, scheme, phi, method="discrete", return_info=True, **kw)
    assert torch.allclose(back, log_q, rtol=0, atol=1e-8)
    assert binfo["newton_iterations"] >= 2
    assert torch.allclose(binfo["phi_T"], info["phi_T"], atol=1e-10)


def test_gaussian_exact_model_is_split_and_agrees_with_generic_path():
    from rgdist.models import build_model

    lat = Lattice(4)
    scheme = build_scheme("carosso", lat)
    G = lat.free_propagator(M2)
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=4, blocks=1)
    with torch.no_grad():  # a non-zero network remainder
        model.net.conv_out.weight.copy_(0.2 * torch.randn(model.net.conv_out.weight.shape,
                                                          generator=gen(6), dtype=torch.float64))
    G_split, rem = split_score(model, scheme)
    assert rem is not None and torch.equal(G_split, G)
    assert split_score(copy.deepcopy(model), scheme)[0] is not None      # e.g. an EMA copy
    assert split_score(model, build_scheme("carosso", lat, mu2=0.2))[0] is None
    x = lat.colored_noise(G, 3, gen(7))
    t = torch.full((3,), 0.3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(scheme.gaussian_score(x, t, G) + rem(x, t), model(x, t), atol=1e-13)
        generic = lambda phi, tt: model(phi, tt)  # noqa: E731
        kw = dict(n_steps=4, grid="log", prior_G=G, method="discrete")
        a = ode_sample_with_logq(model, scheme, 3, generator=gen(8), **kw)
        b = ode_sample_with_logq(generic, scheme, 3, generator=gen(8), **kw)
    assert torch.allclose(a[0], b[0], atol=1e-12) and torch.allclose(a[1], b[1], atol=1e-9)


# ------------------------------------------------------------------ Hutchinson
def test_hutchinson_is_unbiased_within_its_reported_error():
    lat, G, scheme = free_setup()
    phi0 = lat.colored_noise(G, 24, gen(9))
    kw = dict(n_steps=20, grid="log", t_min=T_MIN, prior_G=G)
    score = exact_score(scheme, G)
    exact = ode_log_likelihood(score, scheme, phi0, method="trace", **kw)
    for probe in ("rademacher", "gaussian"):
        est, info = ode_log_likelihood(score, scheme, phi0, method="hutchinson", n_probes=4,
                                       probe=probe, generator=gen(10), return_info=True, **kw)
        sd = info["log_q_var"].sqrt()
        assert bool((sd > 0).all())
        z = ((est - exact) / sd).numpy()
        assert abs(z.mean()) < 4 / math.sqrt(len(z))        # unbiased
        assert 0.5 < math.sqrt((z**2).mean()) < 1.6          # the reported error is right
    # the closed-form Gaussian part is a perfect control variate: zero variance, exact value
    est, info = ode_log_likelihood(GaussianScore(scheme, G), scheme, phi0, method="hutchinson",
                                   generator=gen(11), return_info=True, **kw)
    assert float(info["log_q_var"].abs().max()) == 0.0
    assert torch.allclose(est, exact, rtol=0, atol=1e-8)


# ------------------------------------------------------------------ bad input
def test_exact_divergence_on_large_lattice_suggests_hutchinson():
    lat = Lattice(64)
    scheme = build_scheme("carosso", lat)
    G = lat.free_propagator(M2)
    phi = lat.colored_noise(G, 1, gen(12))
    for method in ("trace", "discrete"):
        with pytest.raises(ValueError, match="hutchinson"):
            ode_log_likelihood(exact_score(scheme, G), scheme, phi, n_steps=2, method=method)
        with pytest.raises(ValueError, match="hutchinson"):
            ode_sample_with_logq(exact_score(scheme, G), scheme, 1, n_steps=2, method=method,
                                 generator=gen(0))
    # Hutchinson runs there (one step, one probe)
    lq = ode_log_likelihood(exact_score(scheme, G), scheme, phi, n_steps=1, method="hutchinson",
                            generator=gen(0))
    assert torch.isfinite(lq).all()


def test_bad_arguments_raise_value_error():
    lat, G, scheme = free_setup(4)
    phi = lat.colored_noise(G, 2, gen(13))
    score = exact_score(scheme, G)
    with pytest.raises(ValueError, match="method must be one of"):
        ode_log_likelihood(score, scheme, phi, n_steps=2, method="taylor")
    # the continuous-time density with the exact divergence is now called "trace"
    for fn, args in ((ode_log_likelihood, (phi,)), (ode_sample_with_logq, (2,))):
        with pytest.raises(ValueError, match="'exact' is now called 'trace'"):
            fn(score, scheme, *args, n_steps=2, method="exact", generator=gen(0))
    with pytest.raises(ValueError, match="n_probes"):
        ode_log_likelihood(score, scheme, phi, n_steps=2, method="hutchinson", n_probes=0,
                           generator=gen(0))
    with pytest.raises(ValueError, match="probe"):
        ode_log_likelihood(score, scheme, phi, n_steps=2, method="hutchinson", probe="sobol",
                           generator=gen(0))
    with pytest.raises(ValueError, match="generator"):
        ode_log_likelihood(score, scheme, phi, n_steps=2, method="hutchinson")
    with pytest.raises(ValueError, match="generator"):
        ode_sample_with_logq(score, scheme, 2, n_steps=2, generator=None)
    with pytest.raises(ValueError, match="n must be"):
        ode_sample_with_logq(score, scheme, 0, n_steps=2, generator=gen(0))
    with pytest.raises(ValueError, match="n_steps"):
        ode_sample_with_logq(score, scheme, 2, n_steps=0, generator=gen(0))
    # a frozen zero mode has no prior density unless the data spectrum is given
    pol = build_scheme("polchinski", lat, mu2=0.0)  # mu2 = 0: frozen zero mode
    with pytest.raises(ValueError, match="prior_G"):
        ode_sample_with_logq(score, pol, 2, n_steps=2, generator=gen(0))
    phi_p, lq = ode_sample_with_logq(GaussianScore(pol, G), pol, 2, n_steps=2, generator=gen(0),
                                     prior_G=G, method="discrete")
    assert torch.isfinite(lq).all()
