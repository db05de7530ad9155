"""Randomized HMC trajectory length (``jitter``): the cure of the HMC resonance.

Free theory, plain leapfrog HMC with the settings of ``campaigns/free_field_check.yaml``
(step_size 0.1, n_steps 10: tau = 1, target acceptance 0.9, 100 adapted thermalization
trajectories from a hot start, then 200 trajectories keeping every 5th) but more chains for
statistical power. There omega(pi, pi) tau = sqrt(8 + m2) ~ pi: without jitter that mode is
nearly reflected by every trajectory and keeps most of its hot-start amplitude.

Statistics: the chains are independent (each draws its own step sizes), so every chain is one
bin; the jackknife over those bins (rgdist.measure.stats.jackknife) gives the error of G2(p)
at every momentum, one representative of every pair {p, -p}. The acceptance is an exact
chi^2 quantile (p-value in both tails > 1e-3). The Gamma method (tau_int) shows the mechanism:
the resonant mode's autocorrelation time with and without jitter.
"""
import math
import types
import warnings

import numpy as np
import pytest
import torch

from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.hmc import DEFAULT_JITTER, HMC, integrate
from rgdist.measure.stats import jackknife, tau_int

torch.set_num_threads(1)

P_MIN = 1e-3  # two-sided chi^2 acceptance: P[X >= chi2] > P_MIN and P[X <= chi2] > P_MIN


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ statistics helpers
def chi2_sf(x, k):
    """P[X >= x] for X ~ chi^2 with k (integer) degrees of freedom, in closed form."""
    h = x / 2
    if k % 2 == 0:
        term = total = math.exp(-h)
        for i in range(1, k // 2):
            term *= h / i
            total += term
        return total
    total = math.erfc(math.sqrt(h))
    term = math.exp(-h) * math.sqrt(h) * 2 / math.sqrt(math.pi)  # i = 1: (h)^(1/2) / Gamma(3/2)
    for i in range(1, (k + 1) // 2):
        total += term
        term *= h / (i + 0.5)
    return total


def chi2_quantile(p_upper, k):
    """x with P[X >= x] = p_upper (bisection on chi2_sf)."""
    lo, hi = 0.0, k + 100.0 * math.sqrt(2 * k) + 100
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi2_sf(mid, k) > p_upper else (lo, mid)
    return 0.5 * (lo + hi)


def test_chi2_sf_closed_form():
    # k = 1, 2 in elementary form; the mean of chi^2_k is k, so P[X >= k] is near 1/2
    assert chi2_sf(3.0, 1) == pytest.approx(math.erfc(math.sqrt(1.5)), rel=1e-14)
    assert chi2_sf(3.0, 2) == pytest.approx(math.exp(-1.5), rel=1e-14)
    assert chi2_sf(3.0, 3) == pytest.approx(math.erfc(math.sqrt(1.5))
                                            + math.sqrt(6 / math.pi) * math.exp(-1.5), rel=1e-14)
    for k in (5, 20, 34, 74):
        assert 0.4 < chi2_sf(k, k) < 0.5
    # upper 0.001 points of the standard chi^2 tables
    for k, x in [(1, 10.828), (2, 13.816), (5, 20.515), (10, 29.588), (20, 45.315),
                 (30, 59.703), (50, 86.661), (100, 149.449)]:
        assert chi2_quantile(1e-3, k) == pytest.approx(x, abs=1.5e-3), k
    # against a Monte Carlo of sums of squared normals
    z = torch.randn((200_000, 7), generator=gen(0), dtype=torch.float64)
    frac = float(((z**2).sum(1) >= 12.0).double().mean())
    assert abs(frac - chi2_sf(12.0, 7)) < 4 * math.sqrt(frac * (1 - frac) / 200_000)


def unique_momentum_mask(lat):
    """One representative of every pair {p, -p} (|phi~(p)| = |phi~(-p)| for real fields)."""
    idx = np.arange(lat.volume).reshape(lat.shape)
    neg = idx[np.ix_(*[(-np.arange(n)) % n for n in lat.shape])]
    return idx <= neg


def free_field_run(n, m2, jitter, seed, n_chains, therm=100, n_traj=200, thin=5):
    """HMC with the free_field_check settings; returns per-trajectory |phi~(p)|^2 / V,
    shape (n_traj, n_chains, *lattice.shape), and the sampler."""
    lat = Lattice(n)
    hmc = HMC(Phi4Action(m2, 0.0), lat, n_chains, step_size=0.1, n_steps=10, jitter=jitter,
              generator=gen(seed))
    hmc.thermalize(therm)
    power = []
    for _ in range(n_traj):
        hmc.trajectory()
        power.append((lat.fft(hmc.phi).abs() ** 2 / lat.volume).numpy())
    return np.stack(power), hmc


def propagator_chi2(power, lat, m2, thin=5):
    """chi^2 of the kept (every thin-th) configurations' G2(p) against 1/(phat^2 + m2).

    Returns (chi2, dof, ratio) with ratio = measured / exact G2 on the whole lattice."""
    kept = power[thin - 1::thin]
    mask = unique_momentum_mask(lat)
    exact = lat.free_propagator(m2).numpy()
    n_kept, n_chains = kept.shape[:2]
    mean, err = jackknife(lambda a: a, kept.sum(0)[:, mask], np.full(n_chains, n_kept))
    chi2 = float((((mean - exact[mask]) / err) ** 2).sum())
    return chi2, int(mask.sum()), kept.mean((0, 1)) / exact


def resonant_tau(power, lat):
    """Gamma-method tau_int (in trajectories) of |phi~(pi, ..., pi)|^2 over all chains."""
    corner = tuple(n // 2 for n in lat.shape)
    with warnings.catch_warnings():  # without jitter the series is far shorter than 100 tau
        warnings.simplefilter("ignore", RuntimeWarning)
        tau, dtau, _ = tau_int(power[(slice(None), slice(None)) + corner])
    return tau, dtau


def rho_bound(jitter):
    """max over theta0 >= 3 pi/4 of E[cos^2 theta], theta uniform in theta0 (1 -+ jitter)."""
    t = np.linspace(0.75 * math.pi, 40, 400_001)
    return float(np.max(0.5 + np.cos(2 * t) * np.sin(2 * t * jitter) / (4 * t * jitter)))


# ------------------------------------------------------------------ the resonance
# (N, m2, n_chains, seed); (8, 1) is free_field_check's m2 = 1 point
SETTINGS = [(8, 1.0, 512, 21), (6, 0.5, 512, 22), (12, 0.3, 256, 23)]


@pytest.mark.parametrize("n,m2,n_chains,seed", SETTINGS)
def test_jittered_hmc_reproduces_free_propagator_at_every_momentum(n, m2, n_chains, seed):
    power, hmc = free_field_run(n, m2, DEFAULT_JITTER, seed, n_chains)
    lat = hmc.lattice
    chi2, dof, ratio = propagator_chi2(power, lat, m2)
    upper = chi2_sf(chi2, dof)
    assert upper > P_MIN and 1 - upper > P_MIN, (chi2 / dof, dof)
    # the resonant mode decorrelates as the jitter predicts: per accepted trajectory its
    # |phi~|^2 keeps at most rho_bound of its correlation, a rejected one keeps all of it
    tau, dtau = resonant_tau(power, lat)
    acc = hmc.stats()["acceptance"]
    rho = acc * rho_bound(DEFAULT_JITTER) + (1 - acc)
    assert tau < (1 + rho) / (2 * (1 - rho)) + 3 * dtau, (tau, dtau, rho)


def test_fixed_length_hmc_fails_the_same_check():
    """jitter = 0 (the old integrator) at free_field_check's m2 = 1: G2(pi, pi) keeps its hot
    start; the same chi^2 is far beyond the 1e-3 quantile and the resonant mode's tau_int is
    far beyond the jittered one's."""
    n, m2, n_chains, seed = SETTINGS[0]
    power_on, hmc_on = free_field_run(n, m2, DEFAULT_JITTER, seed, n_chains)
    power, hmc = free_field_run(n, m2, 0.0, seed, n_chains)
    lat = hmc.lattice
    chi2, dof, ratio = propagator_chi2(power, lat, m2)
    assert chi2 > chi2_quantile(P_MIN, dof), (chi2 / dof, dof)
    assert chi2_sf(chi2, dof) < P_MIN
    corner = (n // 2, n // 2)
    assert ratio[corner] > 1.5, ratio[corner]  # the culprit: G2(pi, pi) far too large
    tau_off, dtau_off = resonant_tau(power, lat)
    tau_on, dtau_on = resonant_tau(power_on, lat)
    assert tau_off - tau_on > 5 * math.hypot(dtau_off, dtau_on), (tau_off, dtau_off, tau_on, dtau_on)
    # same adapted base step with and without jitter: the difference is the jitter alone
    assert (hmc.n_steps, hmc_on.n_steps) == (5, 5)


# ------------------------------------------------------------------ the draws
def _manual_trajectory(hmc, generator, jitter):
    """What one trajectory must do, written out: momenta, per-chain steps, accept/reject."""
    pi = hmc.kinetic.draw(hmc.n_chains, generator, "cpu", torch.float64)
    eps = [hmc.step_size] * hmc.n_chains
    if jitter:
        u = torch.rand(hmc.n_chains, generator=generator, dtype=torch.float64)
        eps = (hmc.step_size * (1 + jitter * (2 * u - 1))).tolist()
    phi1 = torch.empty_like(hmc.phi)
    pi1 = torch.empty_like(pi)
    for c in range(hmc.n_chains):
        phi1[c:c + 1], pi1[c:c + 1] = integrate(hmc.phi[c:c + 1], pi[c:c + 1], hmc.action.force,
                                                eps[c], hmc.n_steps, hmc.integrator)
    dh = hmc.hamiltonian(phi1, pi1) - hmc.hamiltonian(hmc.phi, pi)
    log_u = torch.rand(hmc.n_chains, generator=generator, dtype=torch.float64).log()
    acc = (log_u < -dh).view(-1, 1, 1)
    return torch.where(acc, phi1, hmc.phi), eps


@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.7])
def test_trajectory_draws_its_steps_from_the_sampler_generator(jitter):
    hmc = HMC(Phi4Action(-1.0, 1.0), Lattice(6), 16, step_size=0.3, n_steps=4, jitter=jitter,
              generator=gen(31))
    hmc.thermalize(5, adapt=False)
    for _ in range(3):
        g = torch.Generator().set_state(hmc.generator.get_state())
        want, eps = _manual_trajectory(hmc, g, jitter)
        out = hmc.trajectory()
        torch.testing.assert_close(hmc.phi, want, rtol=0, atol=1e-12)
        # the generator advanced by exactly the manual draws (jitter = 0 draws no steps)
        assert torch.equal(hmc.generator.get_state(), g.get_state())
        assert 0 < int(out["accepted"].sum()) <= 16
        if jitter:
            assert len(set(eps)) == 16  # one step per chain
            assert min(eps) >= 0.3 * (1 - jitter) and max(eps) <= 0.3 * (1 + jitter)


def test_jitter_zero_is_the_fixed_length_chain():
    """jitter = 0 reproduces the fixed-length chain bit for bit (the old behaviour)."""
    lat = Lattice(6)
    hmc = HMC(Phi4Action(-1.0, 1.0), lat, 8, jitter=0.0, generator=gen(32))
    g = gen(32)
    phi = lat.white_noise(8, g, "cpu", torch.float64)  # the hot start
    assert torch.equal(hmc.phi, phi)
    hmc.thermalize(4, adapt=False)
    for _ in range(4):
        pi = hmc.kinetic.draw(8, g, "cpu", torch.float64)
        phi1, pi1 = integrate(phi, pi, hmc.action.force, 0.1, 10, "leapfrog")
        dh = hmc.hamiltonian(phi1, pi1) - hmc.hamiltonian(phi, pi)
        log_u = torch.rand(8, generator=g, dtype=torch.float64).log()
        phi = torch.where((log_u < -dh).view(-1, 1, 1), phi1, phi)
    assert torch.equal(hmc.phi, phi)
    assert torch.equal(hmc.generator.get_state(), g.get_state())


def test_step_draws_are_uniform_around_the_base_step():
    j = DEFAULT_JITTER
    hmc = HMC(Phi4Action(0.5, 0.0), Lattice(4), 4000, step_size=0.2, n_steps=5,
              generator=gen(33))
    assert hmc.jitter == j
    eps = hmc.draw_step_sizes().numpy()
    assert eps.min() >= 0.2 * (1 - j) and eps.max() <= 0.2 * (1 + j)
    # U(eps (1 - j), eps (1 + j)): mean eps, variance (j eps)^2 / 3, fourth central moment
    # (j eps)^4 / 5; tolerances 4 standard errors
    n = len(eps)
    var = (j * 0.2) ** 2 / 3
    assert abs(eps.mean() - 0.2) < 4 * math.sqrt(var / n)
    var_err = math.sqrt(((j * 0.2) ** 4 / 5 - var**2) / n)
    assert abs(eps.var() - var) < 4 * var_err
    # the base step is untouched
    assert hmc.step_size == 0.2 and hmc.n_steps == 5


def test_adaptation_tunes_the_base_step_under_jitter():
    lat = Lattice(8)
    hmc = HMC(Phi4Action(-1.0, 1.0), lat, 128, step_size=0.05, n_steps=20, target_accept=0.8,
              jitter=0.3, generator=gen(34))
    out = hmc.thermalize(150)
    assert hmc.step_size * hmc.n_steps == pytest.approx(1.0, rel=1e-12)  # mean length kept
    assert hmc.n_steps < 20 and out["n_steps"] == hmc.n_steps
    frozen = (hmc.step_size, hmc.n_steps)
    hmc.sample(100)
    assert (hmc.step_size, hmc.n_steps) == frozen
    acc = hmc.stats()["acceptance"]
    assert 0.7 < acc < 0.95, acc  # n_steps is an integer: within one step of the target
    eps = hmc.draw_step_sizes()
    assert eps.min() >= 0.7 * hmc.step_size and eps.max() <= 1.3 * hmc.step_size


# ------------------------------------------------------------------ checkpoints
def test_resume_continues_bit_for_bit_with_jitter():
    lat = Lattice((6, 8))
    kw = dict(jitter=0.4, fourier_accel=True, fa_mass2=0.4, integrator="omelyan")
    a = HMC(Phi4Action(-0.8, 1.0), lat, 8, generator=gen(35), **kw)
    a.thermalize(7)  # resumed in the middle of the adaptation
    state = a.state_dict()
    assert float(state["config/jitter"]) == 0.4
    a.thermalize(6)
    cont = a.sample(9)
    b = HMC(Phi4Action(-0.8, 1.0), lat, 8, generator=gen(999), **kw)
    b.load_state_dict({k: v.copy() for k, v in state.items()})
    b.thermalize(6)
    assert torch.equal(b.sample(9), cont)
    assert (a.step_size, a.n_steps) == (b.step_size, b.n_steps)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_state_dict_jitter_must_match():
    lat = Lattice(6)
    state = HMC(Phi4Action(-1.0, 1.0), lat, 4, jitter=0.3, generator=gen(36)).state_dict()
    with pytest.raises(ValueError, match="jitter"):
        HMC(Phi4Action(-1.0, 1.0), lat, 4, jitter=0.2, generator=gen(36)).load_state_dict(state)
    # a state saved before the jitter existed is a fixed-length chain's
    legacy = {k: v for k, v in state.items() if k != "config/jitter"}
    HMC(Phi4Action(-1.0, 1.0), lat, 4, jitter=0.0, generator=gen(36)).load_state_dict(legacy)
    with pytest.raises(ValueError, match="jitter"):
        HMC(Phi4Action(-1.0, 1.0), lat, 4, generator=gen(36)).load_state_dict(legacy)


# ------------------------------------------------------------------ input validation
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "a", None])
def test_bad_jitter_raises_value_error(value):
    with pytest.raises(ValueError, match=r"jitter must be a number in \[0, 1\)"):
        HMC(Phi4Action(0.5, 1.0), Lattice(4), 2, jitter=value, generator=gen(0))


def test_integrate_per_configuration_steps():
    lat = Lattice(4)
    action = Phi4Action(-1.0, 1.0)
    phi = lat.white_noise(3, gen(37))
    pi = lat.white_noise(3, gen(38))
    steps = torch.tensor([0.05, 0.1, 0.2], dtype=torch.float64)
    q, p = integrate(phi, pi, action.force, steps, 6, "omelyan")
    for c in range(3):
        qc, pc = integrate(phi[c:c + 1], pi[c:c + 1], action.force, float(steps[c]), 6, "omelyan")
        torch.testing.assert_close(q[c:c + 1], qc, rtol=0, atol=1e-14)
        torch.testing.assert_close(p[c:c + 1], pc, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="step_size"):
        integrate(phi, pi, action.force, steps[:2], 6)
    with pytest.raises(ValueError, match="step_size"):
        integrate(phi, pi, action.force, torch.tensor([0.1, 0.0, 0.1], dtype=torch.float64), 6)


# ------------------------------------------------------------------ campaign
def test_campaign_spec_jitter():
    from rgdist.campaign import spec as S
    from rgdist.errors import ConfigError

    base = {"schema_version": 1, "lattice": {"N": [8]}, "grid": {"m2": [0.5], "lam": [0.0]}}
    c = S.parse_campaign(base)
    assert c.hmc.jitter == DEFAULT_JITTER and c.to_dict()["hmc"]["jitter"] == DEFAULT_JITTER
    fixed = S.parse_campaign({**base, "hmc": {"jitter": 0}})
    assert fixed.hmc.jitter == 0.0
    # the jitter changes the HMC data, so it changes the point ids
    assert fixed.points()[0].point_id != c.points()[0].point_id
    for value in (1.0, -0.1, True, "x"):
        with pytest.raises(ConfigError) as info:
            S.parse_campaign({**base, "hmc": {"jitter": value}})
        assert info.value.path == "hmc.jitter"


@pytest.mark.parametrize("jitter", [None, 0.0, 0.45])
def test_campaign_builds_its_hmc_with_the_spec_jitter(jitter, monkeypatch):
    from rgdist.campaign import point as P
    from rgdist.campaign.spec import parse_campaign
    from rgdist.parallel.comm import Comm

    hmc = {"n_chains": 2, "chains_per_block": 1, "therm": 1, "n_traj": 2, "thin": 1}
    if jitter is not None:
        hmc["jitter"] = jitter
    c = parse_campaign({"schema_version": 1, "lattice": {"N": [4]}, "grid": {"m2": [0.5], "lam": [0.0]},
                        "hmc": hmc, "measure": {"n_bins": 2}})
    built = []

    class Recording(HMC):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            built.append(self)

    import rgdist.lattice.hmc

    monkeypatch.setattr(rgdist.lattice.hmc, "HMC", Recording)
    saved = []
    ctx = P.PointContext(campaign=c, point=c.points()[0], comm=Comm.serial(),
                         store=types.SimpleNamespace(save=lambda *a: saved.append(a)),
                         device=torch.device("cpu"), preempt=types.SimpleNamespace(requested=False))
    job = P.PointJob(ctx)
    job._run_stage()
    assert job.stage == "train" and saved
    want = DEFAULT_JITTER if jitter is None else jitter
    assert len(built) == 2 and all(b.jitter == want for b in built)
