"""Reverse samplers driven by the EXACT Gaussian score of free-field data.

With a linear score s_t = -phi/P_t (P_t = A_t^2 G + Sigma_t) every solver step is a linear map
plus independent Gaussian noise, mode by mode, so the per-mode variance follows a
deterministic recursion V <- f^2 V + q, written out below for each solver (this file derives it
independently of the solver code). We check
  * the solver's linear part equals prod f exactly (deterministic, 1e-9),
  * sampled spectra equal the recursion (chi^2 with measured errors),
  * the recursion converges to the exact marginal at the expected order
    (Euler-Maruyama ~ 1/n, Heun ~ 1/n^2, exponential exact with the reference spectrum G),
and the ensemble driver's chunk seeding, NFE counts, records and bad-input errors.
"""
import math

import pytest
import torch

from rgdist.lattice import Lattice
from rgdist.rg import SCHEMES, build_scheme
from rgdist.sample import EnsembleResult, chunk_streams, n_chunks, nfe_per_sample, sample_ensemble, solve

torch.set_num_threads(1)

M2 = 0.5
CONFIGS = {  # (parameters, grid kind)
    "carosso": (dict(T=20.0, mu2=0.1), "log"),
    "polchinski": (dict(T=1.5, Lambda0=2.0, m02=1.0, mu2=0.5), "uniform"),
    "renormalized_polchinski": (dict(T=1.5, Lambda0=2.0, m02=1.0, mu2=0.5), "uniform"),
    "vp": (dict(T=1.0, beta_min=0.1, beta_max=20.0), "uniform"),
    "ve": (dict(T=1.0, sigma_min=0.01, sigma_max=30.0), "uniform"),
}


def setup(name, N):
    params, grid = CONFIGS[name]
    lat = Lattice(N)
    sch = build_scheme(name, lat, **params)
    G = lat.free_propagator(M2)
    return sch, G, grid


def exact_score(sch, G):
    return lambda phi, t: sch.gaussian_score(phi, t, G)


def remainder_weight(sch, s, t, G_ref, n=4001):
    u = torch.linspace(s, t, n, dtype=torch.float64)
    R_u = sch.Sigma(u) if G_ref is None else sch.marginal_spectrum(u, G_ref)
    R_s = sch.Sigma(s) if G_ref is None else sch.marginal_spectrum(s, G_ref)
    ok = R_u > 0
    f = torch.exp(sch.log_A(u) - sch.log_A(s)) * torch.where(ok, R_s / torch.where(ok, R_u, 1.0), 0.0) * sch.beta2(u)
    return torch.trapezoid(f, u, dim=0)


def recursion(sch, times, G, solver, *, G_ref=None, denoise=False, snr=0.16, corrector_steps=1,
              V0=None, factors=None):
    """(V, f): the per-mode variance after the solver's steps, and the product f of the linear
    factors (the map phi_T -> phi_final without noise; not defined for 'pc'). A list passed as
    ``factors`` receives each step's linear factor (the final denoising one included)."""
    times = torch.as_tensor(times, dtype=torch.float64)
    P = sch.marginal_spectrum(times, G)
    R = sch.Sigma(times) if G_ref is None else sch.marginal_spectrum(times, G_ref)
    al, b2, la, sig = sch.alpha(times), sch.beta2(times), sch.log_A(times), sch.Sigma(times)
    frozen = sch.frozen_modes()
    V = P[0].clone() if V0 is None else V0.clone()
    amp = torch.ones_like(V)
    for k in range(len(times) - 1):
        h = float(times[k] - times[k + 1])
        if solver == "euler_maruyama":
            f = 1 + h * (al[k] - b2[k] / P[k])
            q = h * b2[k]
        elif solver in ("exponential", "pc"):
            if solver == "pc":
                for _ in range(corrector_steps):
                    M = torch.where(frozen, torch.zeros_like(R[k]), R[k])
                    eps = 2 * snr**2 * V.numel() / (M * V / P[k] ** 2).sum()
                    V = V * (1 - eps * M / P[k]) ** 2 + 2 * eps * M
            a = torch.exp(la[k] - la[k + 1])
            v = sig[k] - a * a * sig[k + 1]
            if G_ref is None:  # ancestral (Tweedie) step
                f = (1 - v / P[k]) / a
                q = torch.where(R[k] > 0, v * R[k + 1] / torch.where(R[k] > 0, R[k], 1.0), 0.0)
                V = V * f * f + q
                amp = amp * f
                if factors is not None:
                    factors.append(f)
                continue
            pos = R[k] > 0
            inv_R = torch.where(pos, 1 / torch.where(pos, R[k], 1.0), 0.0)
            # Gaussian reference part exact, remainder r = s + phi/R (here phi (1/R - 1/P))
            # with the weight w = int (A_u/A_s)(R_s/R_u) beta_u^2 du (fine trapezoid rule)
            w = remainder_weight(sch, float(times[k + 1]), float(times[k]), G_ref)
            f = torch.where(pos, a * R[k + 1] * inv_R, 1.0) + w * (inv_R - 1 / P[k])
            q = v * R[k + 1] * inv_R
        elif solver == "heun_ode":
            lam_t = -al[k] + b2[k] / (2 * P[k])
            lam_s = -al[k + 1] + b2[k + 1] / (2 * P[k + 1])
            f = 1 - 0.5 * h * (lam_t + lam_s * (1 - h * lam_t))
            q = 0.0
        else:
            raise AssertionError(solver)
        V = V * f * f + q
        amp = amp * f
        if factors is not None:
            factors.append(f)
    if denoise:
        f = (1 - sig[-1] / P[-1]) / torch.exp(la[-1])
        V, amp = V * f * f, amp * f
        if factors is not None:
            factors.append(f)
    return V, amp


def independent_modes(lat):
    idx = torch.arange(lat.volume).reshape(lat.shape)
    neg = idx
    for ax in range(lat.d):
        neg = torch.roll(torch.flip(neg, dims=(ax,)), shifts=1, dims=ax)
    return idx <= neg


def spectrum_chi2(lat, phi, expected):
    power = lat.fft(phi).abs().square() / lat.volume
    err = power.std(0) / math.sqrt(phi.shape[0])
    mask = independent_modes(lat)
    z = ((power.mean(0) - expected) / err)[mask]
    return float(z.square().sum()), int(mask.sum())


def max_rel(V, ref):
    return float((V / ref - 1).abs().max())


# --------------------------------------------------------------- orders of convergence
ORDERS = {"euler_maruyama": (0.85, 1.15), "exponential": (0.8, 1.15), "heun_ode": (1.85, 2.15)}


@pytest.mark.parametrize("N", (8, 16))
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_convergence_order_of_spectrum(name, N):
    """The final spectrum (no denoising) tends to the exact P_tmin at the expected order."""
    sch, G, grid = setup(name, N)
    for solver, (lo, hi) in ORDERS.items():
        errs = []
        for n in (400, 800, 1600):
            times = sch.time_grid(n, grid)
            V, _ = recursion(sch, times, G, solver)
            errs.append(max_rel(V, sch.marginal_spectrum(float(times[-1]), G)))
        slope = math.log2(errs[1] / errs[2])
        if name == "ve" and solver == "euler_maruyama":
            hi = 2.1  # alpha = 0: the first-order term is small at these n (slope 1.8 -> 1)
        assert lo < slope < hi, (solver, errs, slope)
        assert errs[2] < 0.05
    # the exponential integrator with the reference spectrum G is exact for any step count
    for n in (3, 40):
        times = sch.time_grid(n, grid)
        V, _ = recursion(sch, times, G, "exponential", G_ref=G)
        assert max_rel(V, sch.marginal_spectrum(float(times[-1]), G)) < 1e-12
        V, _ = recursion(sch, times, G, "exponential", G_ref=G, denoise=True)
        P = sch.marginal_spectrum(float(times[-1]), G)
        A = sch.A(float(times[-1]))
        assert torch.allclose(V, A**2 * G**2 / P, rtol=1e-12)  # Tweedie: var of E[phi_0|phi_t]
        assert max_rel(V, G) < 0.02


@pytest.mark.parametrize("name", ["carosso", "vp", "renormalized_polchinski"])
def test_pc_converges_to_langevin_bias(name):
    """Unadjusted Langevin with e = 2 snr^2 has fixed point P/(1 - snr^2): the PC spectrum
    approaches it as n grows (and the bias scales with snr^2)."""
    sch, G, grid = setup(name, 8)
    times = sch.time_grid(800, grid)
    P = sch.marginal_spectrum(float(times[-1]), G)
    for snr in (0.16, 0.08):
        V, _ = recursion(sch, times, G, "pc", G_ref=G, snr=snr)
        bias = snr**2 / (1 - snr**2)
        rel = V / P - 1
        assert 0.9 * bias < float(rel.max()) < 1.02 * bias
        assert float(rel.min()) > 0.5 * bias


# --------------------------------------------------------------- the solvers themselves
LINEAR_STEPS = {"carosso": 100, "polchinski": 80, "renormalized_polchinski": 80, "vp": 20, "ve": 20}


def rounding_bound(lat, factors, weights, x_norms, s_norms):
    """Per-mode float64 rounding bound on the linear recursion X_{k+1} = f_k X_k + w_k S_k + noise
    that a solver runs with a linear score S_k (mode-wise factor f_k and score weight w_k),
    going position space <-> momentum space once per step.

    Step k makes an error of at most e_k(p) = c u (||X_{k+1}||_2 + |w_k(p)| ||S_k||_2) in mode
    p: u the unit roundoff, c = 4 (log2 V + 1) for an FFT/inverse-FFT pair (each normwise
    accurate to u log2 V) and the few mode-wise products and sums of a step. The score term
    matters for variance-collapsing schemes, whose score is huge (1/P_t) on collapsed modes:
    its rounding spreads over every mode and is weighted there by w_k(p). Errors are carried
    on by the later factors, so the bound obeys B_{k+1} = |f_k| B_k + e_k, B_0 = c u ||X_0||.
    ``factors``, ``weights``: per step (lattice.shape each); ``x_norms``: ||X_k|| for
    k = 0..n, ``s_norms``: ||S_k|| per step (largest over the batch; Fourier units).
    """
    u = torch.finfo(torch.float64).eps / 2
    c = 4 * (math.log2(lat.volume) + 1)
    bound = torch.full(lat.shape, c * u * x_norms[0], dtype=torch.float64)
    for f, w, xn, sn in zip(factors, weights, x_norms[1:], s_norms):
        bound = f.abs() * bound + c * u * (xn + w.abs() * sn)
    return bound


def score_weights(sch, solver, grid, G, denoise):
    """Per step, the mode-wise weight with which the solver adds the score (see
    rgdist.sample.solvers): Euler-Maruyama h beta_t^2, Heun h (beta_t^2 + beta_s^2)/2
    (both calls), exponential the remainder weight w; the final denoising Sigma/A."""
    out = []
    for t, s in zip(grid[:-1], grid[1:]):
        h = t - s
        if solver == "euler_maruyama":
            out.append(h * sch.beta2(t))
        elif solver == "heun_ode":
            out.append(0.5 * h * (sch.beta2(t) + sch.beta2(s)))
        else:
            out.append(remainder_weight(sch, s, t, G))
    if denoise:
        out.append(sch.Sigma(grid[-1]) / sch.A(grid[-1]))
    return out


@pytest.mark.parametrize("N", (8, 16))
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_linear_part_is_exact(name, N):
    """solve(2 phi) - solve(phi) with the same noise = (prod of the step factors) phi, exactly
    (to the float64 rounding bound of :func:`rounding_bound`: the difference cancels the
    noise-driven part of the trajectory, so the bound scales with the trajectory's and the
    score's norms, and the reverse map of a variance-collapsing scheme amplifies rounding on
    its collapsed modes by the later step factors).

    Uniform grids with steps inside Euler-Maruyama's stability region (h alpha < 2)."""
    sch, G, _ = setup(name, N)
    lat = sch.lattice
    times = sch.time_grid(LINEAR_STEPS[name], "uniform")
    grid = times.tolist()
    phi = lat.colored_noise(sch.prior_spectrum(G), 3, torch.Generator().manual_seed(1))

    def norm(x):
        return float(lat.fft(x).flatten(1).norm(dim=1).max())

    for solver, denoise in (("euler_maruyama", True), ("exponential", False), ("heun_ode", True)):
        weights = score_weights(sch, solver, grid, G, denoise)
        outs, x_norms, s_norms = [], [0.0] * (len(weights) + 1), [0.0] * len(weights)
        for scale in (1.0, 2.0):
            gen = torch.Generator().manual_seed(7)
            state = {"k": 0}

            def score(x, t):
                k = state["k"]
                s_norms[k] = max(s_norms[k], norm(sch.gaussian_score(x, t, G)))
                return sch.gaussian_score(x, t, G)

            def end_of_step(info):
                state["k"] = info["step"]
                x_norms[info["step"]] = max(x_norms[info["step"]], norm(info["phi"]))

            x_norms[0] = max(x_norms[0], norm(scale * phi))
            out, _ = solve(score, sch, scale * phi, times, solver=solver, generator=gen,
                           denoise=denoise, G=G, callback=end_of_step)
            outs.append(out)
            if denoise:
                x_norms[-1] = max(x_norms[-1], norm(out))
        factors = []
        _, amp = recursion(sch, times, G, solver, G_ref=G, denoise=denoise, factors=factors)
        got = lat.fft(outs[1] - outs[0])
        want = lat.fft(phi) * amp
        # both runs round independently: the difference carries twice the bound
        tol = 2 * rounding_bound(lat, factors, weights, x_norms, s_norms)
        err = (got - want).abs()
        assert bool((err <= tol).all()), (solver, float((err / tol).max()))
        if solver == "heun_ode":  # noise-free: the map itself is the product of the factors
            assert bool(((lat.fft(outs[0]) - want).abs() <= tol).all()), solver


SAMPLED = [
    ("vp", "euler_maruyama", 40, None),
    ("vp", "exponential", 40, None),
    ("vp", "pc", 40, "G"),
    ("vp", "heun_ode", 40, None),
    ("renormalized_polchinski", "euler_maruyama", 80, None),
    ("renormalized_polchinski", "exponential", 40, None),
    ("renormalized_polchinski", "pc", 40, "G"),
    ("renormalized_polchinski", "heun_ode", 40, None),
]


@pytest.mark.parametrize("name,solver,n,gref", SAMPLED)
def test_sampled_spectrum_matches_recursion(name, solver, n, gref):
    """One step count, B = 1000 samples on 8^2: the measured spectrum equals the solver's
    recursion (chi^2 over independent momenta) and G within the discretization error."""
    sch, G, grid = setup(name, 8)
    lat = sch.lattice
    G_ref = G if gref else None
    times = sch.time_grid(n, grid)
    gen = torch.Generator().manual_seed(2024)
    phi_T = sch.sample_prior(1000, gen, G=G)
    # without G the exponential solver refuses; its former fallback is the named 'ancestral'
    run = "ancestral" if solver == "exponential" and G_ref is None else solver
    phi, _ = solve(exact_score(sch, G), sch, phi_T, times, solver=run, generator=gen,
                   denoise=True, G=G_ref)
    V, _ = recursion(sch, times, G, solver, G_ref=G_ref, denoise=True)
    chi2, dof = spectrum_chi2(lat, phi, V)
    assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof), (chi2, dof)
    assert max_rel(V, G) < 0.5                   # discretization error at this n (see orders)


@pytest.mark.parametrize("N", (8, 16))
@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_exponential_with_reference_is_exact_when_sampled(name, N):
    """8 steps of the exponential integrator with G: spectrum = exact P_tmin (no denoising).

    An 'snr' grid keeps every step's A_t/A_s above ~1e-11: the step (phi + v s)/a cancels to
    a^2 relative, so much coarser steps of stiff modes would only show float64 rounding."""
    sch, G, _ = setup(name, N)
    times = sch.time_grid(8, "snr")
    gen = torch.Generator().manual_seed(31 + N)
    phi_T = sch.sample_prior(800, gen, G=G)
    phi, _ = solve(exact_score(sch, G), sch, phi_T, times, solver="exponential", generator=gen,
                   denoise=False, G=G)
    chi2, dof = spectrum_chi2(sch.lattice, phi, sch.marginal_spectrum(float(times[-1]), G))
    assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof), (chi2, dof)
    # without the reference spectrum (the ancestral step) the same 8 steps are visibly off
    gen = torch.Generator().manual_seed(31 + N)
    phi, _ = solve(exact_score(sch, G), sch, phi_T, times, solver="ancestral", generator=gen,
                   denoise=False)
    chi2_bad, _ = spectrum_chi2(sch.lattice, phi, sch.marginal_spectrum(float(times[-1]), G))
    assert chi2_bad > dof + 10 * math.sqrt(2 * dof)


def test_frozen_zero_mode_is_kept_by_every_solver():
    lat = Lattice(8)
    sch = build_scheme("polchinski", lat, T=1.5, Lambda0=2.0, m02=1.0, mu2=0.0)
    G = lat.free_propagator(M2)
    gen = torch.Generator().manual_seed(3)
    pool = lat.colored_noise(G, 50, gen).mean((1, 2))
    phi_T = sch.sample_prior(6, gen, zero_mode_pool=pool)
    times = sch.time_grid(10)
    for solver in ("euler_maruyama", "exponential", "pc", "heun_ode", "ancestral"):
        phi, _ = solve(exact_score(sch, G), sch, phi_T, times, solver=solver, generator=gen, G=G)
        assert bool(torch.isfinite(phi).all())
        assert torch.allclose(phi.mean((1, 2)), phi_T.mean((1, 2)), atol=1e-12), solver


# --------------------------------------------------------------- records, callback, nfe
def test_records_callback_and_nfe():
    sch, G, _ = setup("vp", 8)
    times = sch.time_grid(10)
    gen = torch.Generator().manual_seed(0)
    phi_T = sch.sample_prior(4, gen)
    seen, calls = [], [0]

    def score(phi, t):
        calls[0] += 1
        assert t.shape == (4,) and t.dtype == phi.dtype
        return sch.gaussian_score(phi, t, G)

    def callback(info):
        seen.append((info["step"], info["t"], info["phi"].clone(), info["nfe"]))

    for solver in ("euler_maruyama", "exponential", "pc", "heun_ode"):
        calls[0], seen[:] = 0, []
        phi, rec = solve(score, sch, phi_T, times, solver=solver, generator=gen, callback=callback,
                         record_times=[1.0, 0.52, 0.0], corrector_steps=2, G=G)
        assert calls[0] == nfe_per_sample(solver, 10, corrector_steps=2, denoise=True)
        assert [s[0] for s in seen] == list(range(1, 11)) and seen[-1][3] == calls[0] - 1
        assert sorted(rec) == sorted([1.0, float(times[5]), float(times[-1])])
        assert torch.equal(rec[1.0], phi_T)
        assert torch.equal(rec[float(times[5])], seen[4][2])
        assert torch.equal(rec[float(times[-1])], seen[-1][2])
    # a grid ending at t = 0: no denoising call; Heun's last step is an Euler step
    times0 = torch.linspace(1.0, 0.0, 6, dtype=torch.float64)
    for solver in ("exponential", "heun_ode"):
        calls[0] = 0
        solve(score, sch, phi_T, times0, solver=solver, generator=gen, G=G)
        assert calls[0] == nfe_per_sample(solver, 5, ends_at_zero=True)


def test_solve_bad_input():
    sch, G, _ = setup("vp", 8)
    score = exact_score(sch, G)
    gen = torch.Generator().manual_seed(0)
    phi = sch.sample_prior(2, gen)
    times = sch.time_grid(4)
    with pytest.raises(ValueError, match="solver must be one of.*euler_maruyama.*heun_ode"):
        solve(score, sch, phi, times, solver="rk4", generator=gen)
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        solve(score, sch, phi, times[:1], generator=gen)
    with pytest.raises(ValueError, match="strictly decreasing"):
        solve(score, sch, phi, times.flip(0), generator=gen)
    with pytest.raises(ValueError, match="times must lie in"):
        solve(score, sch, phi, torch.tensor([2.0, 0.5]), generator=gen)
    with pytest.raises(ValueError, match="generator"):
        solve(score, sch, phi, times, solver="euler_maruyama")
    with pytest.raises(ValueError, match="corrector_steps"):
        solve(score, sch, phi, times, solver="pc", generator=gen, corrector_steps=-1)
    with pytest.raises(ValueError, match="snr must be > 0"):
        solve(score, sch, phi, times, solver="pc", generator=gen, snr=0.0)
    with pytest.raises(ValueError, match="G must be a non-negative spectrum"):
        solve(score, sch, phi, times, generator=gen, G=torch.ones(4, 4))
    with pytest.raises(ValueError, match="phi_T must have shape"):
        solve(score, sch, phi[0], times, generator=gen)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        sample_ensemble(score, sch, 4, n_steps=0, seed_streams=1)
    with pytest.raises(ValueError, match="solver must be one of"):
        nfe_per_sample("leapfrog", 3)
    # the ODE needs no generator
    out, _ = solve(score, sch, phi, times, solver="heun_ode")
    assert out.shape == phi.shape


# --------------------------------------------------------------- ensembles
def test_ensemble_chunks_are_independent_of_the_split():
    sch, G, _ = setup("carosso", 8)
    score = exact_score(sch, G)
    kw = dict(n_steps=6, solver="pc", grid="log", batch_size=4, prior_G=G, record_times=[5.0])
    streams = chunk_streams(123, "grid_point", 0)
    full = sample_ensemble(score, sch, 10, seed_streams=streams, **kw)
    assert isinstance(full, EnsembleResult)
    assert full.samples.shape == (10, 8, 8) and full.chunks == (0, 1, 2) == tuple(range(n_chunks(10, 4)))
    assert full.nfe == nfe_per_sample("pc", 6)
    assert len(full.records) == 1 and next(iter(full.records.values())).shape == (10, 8, 8)
    odd = sample_ensemble(score, sch, 10, seed_streams=streams, chunks=[1], **kw)
    even = sample_ensemble(score, sch, 10, seed_streams=streams, chunks=[2, 0], **kw)
    assert torch.equal(odd.samples, full.samples[4:8])
    assert torch.equal(even.samples[:2], full.samples[8:10])
    assert torch.equal(even.samples[2:], full.samples[0:4])
    # a master seed with a path is the same as the explicit streams
    again = sample_ensemble(score, sch, 10, seed_streams=(123, "grid_point", 0), **kw)
    assert torch.equal(again.samples, full.samples)
    other = sample_ensemble(score, sch, 10, seed_streams=124, **kw)
    assert not torch.equal(other.samples, full.samples)
    with pytest.raises(ValueError, match="chunks must lie in"):
        sample_ensemble(score, sch, 10, seed_streams=streams, chunks=[3], **kw)
    with pytest.raises(ValueError, match="seed_streams must be"):
        sample_ensemble(score, sch, 10, seed_streams="seed", **kw)


def test_ensemble_zero_mode_pool_and_spectrum():
    lat = Lattice(8)
    sch = build_scheme("renormalized_polchinski", lat, T=1.5, Lambda0=2.0, m02=1.0, mu2=0.0)
    G = lat.free_propagator(M2)
    pool = lat.colored_noise(G, 2000, torch.Generator().manual_seed(8)).mean((1, 2))
    res = sample_ensemble(exact_score(sch, G), sch, 1000, n_steps=10, solver="exponential",
                          batch_size=500, seed_streams=5, prior_G=G, zero_mode_pool=pool,
                          denoise=False)
    assert res.nfe == 10
    V, _ = recursion(sch, res.times, G, "exponential", G_ref=G)
    chi2, dof = spectrum_chi2(lat, res.samples, V)
    assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof)
    with pytest.raises(ValueError, match="zero_mode_pool"):
        sample_ensemble(exact_score(sch, G), sch, 10, n_steps=2, seed_streams=5)


def test_exponential_step_does_not_amplify_score_errors_on_stiff_modes():
    """A 1e-3 relative error in the score on a coarse grid (alpha h ~ 8 on the top modes):
    the exponential integrator with a reference spectrum keeps the spectrum within a few
    percent, while the Tweedie/ancestral form multiplies the error by v/a ~ exp(alpha h)."""
    lat = Lattice((8, 8))
    G = 1.0 / (lat.phat2() + 0.5)
    sch = build_scheme("carosso", lat, T=10.0, mu2=0.3)
    times = sch.time_grid(10, "uniform")

    def score(phi, t):
        return sch.gaussian_score(phi, float(t[0]), G) * (1 + 1e-3)

    gen = torch.Generator().manual_seed(5)
    phi_T = sch.sample_prior(512, gen, G=G)
    out = {}
    for name, ref in (("exponential", G), ("ancestral", None)):
        g = torch.Generator().manual_seed(6)
        phi, _ = solve(score, sch, phi_T, times, solver=name, generator=g, G=ref)
        spec = (lat.fft(phi).abs() ** 2).mean(0) / lat.volume
        out[name] = float(((spec / G) - 1).abs().max())
    assert out["exponential"] < 0.35  # statistical spread of 512 samples per mode (~4 sigma)
    assert out["ancestral"] > 1e3, out
