"""ERG noising schemes: closed forms, exact forward kernel, scores, priors, grids, bad input.

Everything is checked against the free theory G(p) = 1/(phat^2 + m2) (SPEC sections 2, 4).
"""
import math

import pytest
import torch

from rgdist.lattice import Lattice
from rgdist.rg import SCHEMES, build_scheme

torch.set_num_threads(1)

M2 = 0.5
# parameters with a well-conditioned prior (dynamic range < 1e19) and small leftover
CONFIGS = {
    "carosso": dict(T=20.0, mu2=0.1),
    "polchinski": dict(T=1.5, Lambda0=2.0, m02=1.0, mu2=0.5),
    "renormalized_polchinski": dict(T=1.5, Lambda0=2.0, m02=1.0, mu2=0.5),
    "vp": dict(T=1.0, beta_min=0.1, beta_max=20.0),
    "ve": dict(T=1.0, sigma_min=0.01, sigma_max=30.0),
}
NS = (8, 16)


def scheme_for(name, N):
    return build_scheme(name, Lattice(N), **CONFIGS[name])


def independent_modes(lat):
    """Boolean mask choosing one momentum of each pair {p, -p} (|phi~(p)| = |phi~(-p)|)."""
    idx = torch.arange(lat.volume).reshape(lat.shape)
    neg = idx
    for ax, n in enumerate(lat.shape):
        neg = torch.roll(torch.flip(neg, dims=(ax,)), shifts=1, dims=ax)
    return idx <= neg


def spectrum_chi2(lat, phi, expected):
    """chi^2 of the measured spectrum <|phi~|^2>/V against ``expected`` over independent modes,
    with per-mode errors from the sample spread. Returns (chi2, dof)."""
    power = lat.fft(phi).abs().square() / lat.volume
    mean = power.mean(0)
    err = power.std(0) / math.sqrt(phi.shape[0])
    mask = independent_modes(lat)
    z = ((mean - expected) / err)[mask]
    return float(z.square().sum()), int(mask.sum())


def test_independent_modes_mask_counts():
    for N in (4, 5, 8):
        lat = Lattice(N)
        n_self = sum(1 for a in range(N) for b in range(N) if (2 * a) % N == 0 and (2 * b) % N == 0)
        assert int(independent_modes(lat).sum()) == (lat.volume - n_self) // 2 + n_self


# ---------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_closed_forms_solve_their_odes(name, N):
    """dlogA/dt = -alpha, dSigma/dt = -2 alpha Sigma + beta^2 (central differences), A(0) = 1,
    Sigma(0) = 0."""
    sch = scheme_for(name, N)
    assert torch.equal(sch.A(0.0), torch.ones(sch.lattice.shape, dtype=torch.float64))
    assert torch.equal(sch.Sigma(0.0), torch.zeros(sch.lattice.shape, dtype=torch.float64))
    T = sch.T
    ts = torch.tensor([1e-3, 0.05, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64) * T
    dt = 1e-5 * T
    dlogA = (sch.log_A(ts + dt) - sch.log_A(ts - dt)) / (2 * dt)
    alpha = sch.alpha(ts)
    assert torch.allclose(dlogA, -alpha, rtol=1e-6, atol=1e-9 * float(alpha.abs().max()))
    assert torch.allclose(sch.A(ts), torch.exp(sch.log_A(ts)), rtol=1e-14, atol=0)
    dSig = (sch.Sigma(ts + dt) - sch.Sigma(ts - dt)) / (2 * dt)
    drift, noise = -2 * alpha * sch.Sigma(ts), sch.beta2(ts)
    scale = drift.abs() + noise.abs()
    assert bool(((dSig - drift - noise).abs() <= 1e-6 * scale).all())
    assert bool((sch.beta2(ts) >= 0).all()) and bool((sch.Sigma(ts) >= 0).all())


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_broadcast_shapes_and_float_t(name):
    sch = scheme_for(name, 8)
    t = torch.tensor([0.1, 0.4, 0.7], dtype=torch.float64) * sch.T
    for fn in (sch.alpha, sch.beta2, sch.A, sch.Sigma, sch.log_A):
        out = fn(t)
        assert out.shape == (3, 8, 8) and out.dtype == torch.float64
        assert torch.allclose(out[1], fn(0.4 * sch.T), rtol=1e-13)
        assert fn(0.4 * sch.T).shape == (8, 8)
    assert sch.marginal_spectrum(t, Lattice(8).free_propagator(M2)).shape == (3, 8, 8)


def test_carosso_formulas_and_zero_mode_limit():
    lat = Lattice(8)
    sch = build_scheme("carosso", lat, T=10.0, mu2=0.0)
    w = lat.phat2()
    t = 0.37
    assert torch.allclose(sch.A(t), torch.exp(-w * t), rtol=1e-14)
    nz = w > 0
    assert torch.allclose(sch.Sigma(t)[nz], ((1 - torch.exp(-2 * w * t)) / (2 * w))[nz], rtol=1e-12)
    assert sch.Sigma(t)[0, 0] == t                      # w = 0: Sigma = t exactly
    tiny = build_scheme("carosso", lat, T=10.0, mu2=1e-300)
    assert math.isclose(float(tiny.Sigma(t)[0, 0]), t, rel_tol=1e-12)
    # tends to the free field of spectrum 1/(2w)
    assert torch.allclose(sch.Sigma(200.0)[nz], (1 / (2 * w))[nz], rtol=1e-12)


def test_polchinski_formulas():
    lat = Lattice(8)
    Lam0, m02, mu2 = 2.5, 0.7, 0.3
    sch = build_scheme("polchinski", lat, T=1.0, Lambda0=Lam0, m02=m02, mu2=mu2)
    w = lat.phat2() + mu2
    C = 1 / (lat.phat2() + m02)
    t = 0.6
    K = lambda s: torch.exp(-w / (math.exp(-s) * Lam0) ** 2)
    assert torch.allclose(sch.A(t), K(t) / K(0), rtol=1e-13)
    assert torch.allclose(sch.Sigma(t), C * K(t) * (1 - K(t) / K(0)), rtol=1e-12)
    dK = (K(t + 1e-6) - K(t - 1e-6)) / 2e-6
    assert torch.allclose(sch.beta2(t), -dK * C, rtol=1e-7)
    assert torch.allclose(sch.alpha(t), -dK / K(t), rtol=1e-7)


@pytest.mark.parametrize("N", NS)
def test_renormalized_polchinski_is_variance_preserving_at_reference_propagator(N):
    lat = Lattice(N)
    sch = build_scheme("renormalized_polchinski", lat, T=2.0, Lambda0=3.0, m02=0.8, mu2=0.2)
    C = 1 / (lat.phat2() + 0.8)
    ts = torch.linspace(0, 2.0, 9, dtype=torch.float64)
    assert torch.allclose(sch.marginal_spectrum(ts, C), C.expand(9, *lat.shape), rtol=1e-13)
    # the renormalized field C^(-1/2) phi tends to white noise
    assert torch.allclose(sch.Sigma(30.0) / C, torch.ones(lat.shape, dtype=torch.float64), rtol=1e-12)
    # any other data spectrum is not preserved
    G = lat.free_propagator(M2)
    assert not torch.allclose(sch.marginal_spectrum(1.0, G), G, rtol=1e-3)


def test_vp_and_ve_formulas():
    lat = Lattice(8)
    vp = build_scheme("vp", lat, T=2.0, beta_min=0.2, beta_max=10.0)
    t = 0.8
    B = 0.2 * t + (10.0 - 0.2) * t * t / (2 * 2.0)
    assert torch.allclose(vp.A(t), torch.full(lat.shape, math.exp(-B / 2), dtype=torch.float64))
    assert torch.allclose(vp.marginal_spectrum(t, torch.ones(lat.shape, dtype=torch.float64)),
                          torch.ones(lat.shape, dtype=torch.float64), rtol=1e-14)
    ve = build_scheme("ve", lat, T=1.0, sigma_min=0.01, sigma_max=50.0)
    assert torch.equal(ve.A(0.3), torch.ones(lat.shape, dtype=torch.float64))
    assert math.isclose(float(ve.Sigma(1.0)[0, 0]), 50.0**2 - 0.01**2, rel_tol=1e-12)
    assert math.isclose(float(ve.Sigma(0.5)[0, 0]), 0.01**2 * (5000.0 - 1), rel_tol=1e-12)


# ---------------------------------------------------------------------------- forward kernel
@pytest.mark.parametrize("N", NS)
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_forward_kernel_spectrum(name, N):
    """phi_0 from the exact free field; sample_forward at several t has spectrum A^2 G + Sigma
    (chi^2 over independent momenta with measured errors); a wrong formula fails."""
    sch = scheme_for(name, N)
    lat = sch.lattice
    G = lat.free_propagator(M2)
    gen = torch.Generator().manual_seed(11 + N)
    B = 1500
    phi0 = lat.colored_noise(G, B, gen)
    wrong_chi2 = []
    for frac in (0.02, 0.2, 1.0):
        t = frac * sch.T
        phi_t, eps = sch.sample_forward(phi0, t, gen)
        assert torch.allclose(phi_t - eps, lat.filter(phi0, sch.A(t)), atol=1e-12)
        chi2, dof = spectrum_chi2(lat, phi_t, sch.marginal_spectrum(t, G))
        assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof), (frac, chi2, dof)
        chi2_eps, _ = spectrum_chi2(lat, eps, sch.Sigma(t))
        assert abs(chi2_eps - dof) < 5 * math.sqrt(2 * dof), (frac, chi2_eps, dof)
        # a wrong kernel: A instead of A^2 (for VE, where A = 1, a 10% wrong Sigma)
        wrong = sch.A(t) * G + sch.Sigma(t) if name != "ve" else G + 1.1 * sch.Sigma(t)
        wrong_chi2.append(spectrum_chi2(lat, phi_t, wrong)[0])
    assert max(wrong_chi2) > dof + 10 * math.sqrt(2 * dof), wrong_chi2


def test_forward_per_sample_times():
    sch = scheme_for("carosso", 8)
    lat = sch.lattice
    gen = torch.Generator().manual_seed(3)
    phi0 = lat.colored_noise(lat.free_propagator(M2), 3, gen)
    t = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
    phi_t, eps = sch.sample_forward(phi0, t, gen)
    for b in range(3):
        assert torch.allclose((phi_t - eps)[b], lat.filter(phi0[b:b + 1], sch.A(float(t[b])))[0])
    with pytest.raises(ValueError, match="shape"):
        sch.sample_forward(phi0, torch.ones(2, dtype=torch.float64), gen)


# ---------------------------------------------------------------------------- scores
def _gaussian_logp(lat, phi, spectrum):
    return -(lat.fft(phi).abs().square() / spectrum).sum() / (2 * lat.volume)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_gaussian_score_is_gradient_of_log_density(name):
    sch = scheme_for(name, 8)
    lat = sch.lattice
    G = lat.free_propagator(M2)
    gen = torch.Generator().manual_seed(5)
    t = torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64) * sch.T
    P = sch.marginal_spectrum(t, G)
    phi = lat.colored_noise(G, 3, gen).requires_grad_(True)
    logp = _gaussian_logp(lat, phi, P)
    (grad,) = torch.autograd.grad(logp, phi)
    score = sch.gaussian_score(phi.detach(), t, G)
    assert torch.allclose(score, grad, rtol=1e-10, atol=1e-10 * float(grad.abs().max()))


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_conditional_score(name):
    """The score of the exact transition kernel, to its float64 rounding bound.

    conditional_score recomputes eps' = phi_t - ifft(A fft(phi0)), which differs from the eps
    that sample_forward added by a rounding error of at most c u (||phi_t|| + ||A phi0~||) in
    every Fourier mode (u the unit roundoff, c = 4 (log2 V + 1) for the FFT pairs involved;
    norms in Fourier units, per configuration). Dividing by Sigma_t(p) amplifies it by the
    condition number 1/Sigma_t(p) (up to 1e12 for the collapsed modes of the Polchinski
    scheme), and the final inverse FFT of the score adds c u ||score~||. So per mode
        |fft(score) - (-fft(eps)/Sigma)|(p) <= c u [(||phi_t|| + ||A phi0~||) / Sigma(p) + ||score~||],
    and a position-space entry is off by at most the mean over modes of that bound.
    """
    sch = scheme_for(name, 8)
    lat = sch.lattice
    gen = torch.Generator().manual_seed(6)
    phi0 = lat.colored_noise(lat.free_propagator(M2), 4, gen)
    t = torch.tensor([0.05, 0.2, 0.5, 1.0], dtype=torch.float64) * sch.T
    phi_t, eps = sch.sample_forward(phi0, t, gen)
    score = sch.conditional_score(phi_t, phi0, t)
    Sigma = sch.Sigma(t)
    u, c = torch.finfo(torch.float64).eps / 2, 4 * (math.log2(lat.volume) + 1)

    def norm(X):  # per configuration, broadcastable against (B, *shape)
        return X.flatten(1).norm(dim=1).reshape(-1, *([1] * lat.d))

    want = -lat.fft(eps) / Sigma
    mean = lat.fft(phi0) * sch.A(t)
    tol = c * u * ((norm(lat.fft(phi_t)) + norm(mean)) / Sigma + norm(want))
    assert bool(((lat.fft(score) - want).abs() <= tol).all())
    # position space: each entry is off by at most the mean over modes of the bound
    tol_x = tol.flatten(1).mean(1).reshape(-1, *([1] * lat.d))
    assert bool(((sch.noise_score(eps, t) - score).abs() <= 2 * tol_x).all())
    # autograd of the Gaussian transition density log p(phi_t | phi_0): the same bound (its
    # x - mean has the same rounding), twice since both sides round independently
    x = phi_t.clone().requires_grad_(True)
    mean_x = lat.filter(phi0, sch.A(t))
    (grad,) = torch.autograd.grad(_gaussian_logp(lat, x - mean_x, Sigma), x)
    assert bool(((score - grad).abs() <= 2 * tol_x).all())
    # the check is not vacuous: on the well-conditioned modes the bound is below 1e-4 of the
    # entries (1e-13 for most schemes; ~1e-5 for Polchinski, whose score~ norm is dominated
    # by the collapsed modes, so its round-trip rounding reaches every mode)
    assert float((tol / want.abs())[Sigma > 1e-3].max()) < 1e-4


def test_frozen_zero_mode_conditional_score_is_finite():
    sch = build_scheme("polchinski", Lattice(8), T=1.0, Lambda0=2.0, m02=1.0, mu2=0.0)
    lat = sch.lattice
    assert bool(sch.frozen_modes()[0, 0]) and int(sch.frozen_modes().sum()) == 1
    gen = torch.Generator().manual_seed(1)
    phi0 = lat.colored_noise(lat.free_propagator(M2), 4, gen)
    phi_t, eps = sch.sample_forward(phi0, 0.5, gen)
    assert torch.allclose(phi_t.mean((1, 2)), phi0.mean((1, 2)), atol=1e-13)  # zero mode frozen
    score = sch.conditional_score(phi_t, phi0, 0.5)
    assert bool(torch.isfinite(score).all())
    assert float(lat.fft(score)[:, 0, 0].abs().max()) < 1e-8


# ---------------------------------------------------------------------------- prior
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_prior_spectrum_and_leftover(name):
    sch = scheme_for(name, 16)
    lat = sch.lattice
    G = lat.free_propagator(M2)
    assert torch.allclose(sch.prior_spectrum(G), sch.A(sch.T) ** 2 * G + sch.Sigma(sch.T))
    assert torch.equal(sch.prior_spectrum(), sch.Sigma(sch.T))
    left = sch.leftover(G)
    ratio = sch.A(sch.T) ** 2 * G / sch.Sigma(sch.T)
    assert torch.allclose(left["ratio"], ratio)
    assert math.isclose(left["max"], float(ratio.max()), rel_tol=1e-12)
    assert math.isclose(left["mean"], float(ratio.mean()), rel_tol=1e-12)
    assert left["max"] < 0.3 and left["dynamic_range"] < 1e20
    gen = torch.Generator().manual_seed(2)
    phi = sch.sample_prior(1500, gen, G=G)
    chi2, dof = spectrum_chi2(lat, phi, sch.prior_spectrum(G))
    assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof)


@pytest.mark.parametrize("name", ["polchinski", "renormalized_polchinski"])
def test_frozen_zero_mode_prior_needs_pool(name):
    lat = Lattice(8)
    sch = build_scheme(name, lat, T=1.5, Lambda0=2.0, m02=1.0, mu2=0.0)
    gen = torch.Generator().manual_seed(4)
    with pytest.raises(ValueError, match="mu2 > 0 or pass zero_mode_pool"):
        sch.sample_prior(8, gen)
    G = lat.free_propagator(M2)
    data = lat.colored_noise(G, 4000, gen)
    pool = data.mean((1, 2))
    phi = sch.sample_prior(4000, gen, zero_mode_pool=pool)
    means = phi.mean((1, 2))
    # every sample's zero mode is a pool value (A_T(0) = 1)
    assert bool(torch.isclose(means[:, None], pool[None, :], atol=1e-13).any(1).all())
    # zero-mode spectrum V <M^2> = G(0) within errors; non-zero modes have spectrum Sigma_T
    z = lat.volume * means.square()
    assert abs(float(z.mean()) - float(G[0, 0])) < 4 * float(z.std()) / math.sqrt(4000)
    left = sch.leftover(G)
    assert left["n_frozen"] == 1 and math.isinf(float(left["ratio"][0, 0]))
    assert math.isfinite(left["max"])
    # schemes without frozen modes ignore the pool
    vp = build_scheme("vp", lat)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(vp.sample_prior(3, g1), vp.sample_prior(3, g2, zero_mode_pool=pool))


# ---------------------------------------------------------------------------- time grids
@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize("kind", ["uniform", "log", "snr"])
def test_time_grids(name, kind):
    sch = scheme_for(name, 8)
    grid = sch.time_grid(16, kind=kind)
    assert grid.dtype == torch.float64 and grid.shape == (17,)
    assert float(grid[0]) == sch.T and float(grid[-1]) == sch.default_t_min
    assert bool((grid[1:] < grid[:-1]).all())
    if kind == "uniform":
        assert torch.allclose(grid[:-1] - grid[1:], torch.full((16,), (sch.T - sch.default_t_min) / 16,
                                                               dtype=torch.float64), rtol=1e-10)
    elif kind == "log":
        r = grid[1:] / grid[:-1]
        assert torch.allclose(r, r[0].expand(16), rtol=1e-10)
    else:
        p = sch.phat2()
        i = int(torch.nonzero(p == p[p > 0].min())[0][0]), int(torch.nonzero(p == p[p > 0].min())[0][1])
        snr = sch.log_snr(grid)[:, i[0], i[1]]
        d = snr[:-1] - snr[1:]
        assert bool((d < 0).all())
        assert torch.allclose(d, d.mean().expand(16), rtol=1e-8)


def test_log_snr_values():
    sch = scheme_for("carosso", 8)
    G = sch.lattice.free_propagator(M2)
    t = 3.0
    expected = torch.log(sch.A(t) ** 2 * G / sch.Sigma(t))
    assert torch.allclose(sch.log_snr(t, G), expected, rtol=1e-12)


# ---------------------------------------------------------------------------- bad input
def test_registry_and_bad_input():
    lat = Lattice(8)
    with pytest.raises(ValueError, match="carosso.*polchinski.*renormalized_polchinski.*ve.*vp"):
        build_scheme("heat", lat)
    with pytest.raises(ValueError, match="unknown parameter.*Lambda0"):
        build_scheme("carosso", lat, Lambda0=1.0)
    for name in SCHEMES:
        with pytest.raises(ValueError, match="T must be > 0"):
            build_scheme(name, lat, T=0.0)
        with pytest.raises(ValueError, match="T must be"):
            build_scheme(name, lat, T=float("nan"))
        assert build_scheme(name, lat).name == name
        assert build_scheme(name, lat).params()["T"] > 0
    with pytest.raises(ValueError, match="Lambda0 must be > 0"):
        build_scheme("polchinski", lat, Lambda0=0.0)
    with pytest.raises(ValueError, match="m02 must be > 0"):
        build_scheme("renormalized_polchinski", lat, m02=-1.0)
    with pytest.raises(ValueError, match="mu2 must be >= 0"):
        build_scheme("polchinski", lat, mu2=-0.1)
    with pytest.raises(ValueError, match="mu2 must be >= 0"):
        build_scheme("carosso", lat, mu2=-0.1)
    with pytest.raises(ValueError, match="sigma_max must be > sigma_min"):
        build_scheme("ve", lat, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="beta_max must be >= beta_min"):
        build_scheme("vp", lat, beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="lattice"):
        build_scheme("vp", (8, 8))
    sch = build_scheme("carosso", lat)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        sch.time_grid(0)
    with pytest.raises(ValueError, match="kind must be one of"):
        sch.time_grid(10, kind="cosine")
    with pytest.raises(ValueError, match="t_min must lie in"):
        sch.time_grid(10, t_min=sch.T)
    with pytest.raises(ValueError, match="t_min must lie in \\(0"):
        sch.time_grid(10, kind="log", t_min=0.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        sch.A(-1.0)
    with pytest.raises(ValueError, match="G must be a spectrum"):
        sch.marginal_spectrum(1.0, torch.ones(4, 4))
    with pytest.raises(ValueError, match="batch must be"):
        sch.sample_prior(0, torch.Generator())
    with pytest.raises(ValueError, match="phi0 must have shape"):
        sch.sample_forward(torch.zeros(2, 4, 4), 1.0, torch.Generator())


def test_any_dimension_and_shape():
    lat = Lattice((6, 4, 5))
    for name in SCHEMES:
        sch = build_scheme(name, lat)
        gen = torch.Generator().manual_seed(0)
        phi0 = lat.white_noise(2, gen)
        phi_t, eps = sch.sample_forward(phi0, torch.tensor([0.1, 0.5]) * sch.T, gen)
        assert phi_t.shape == (2, 6, 4, 5)
        assert sch.time_grid(4, "snr").shape == (5,)
