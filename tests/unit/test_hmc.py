"""HMC: reversibility, energy-error scaling, exactness against the free theory, agreement with
local Metropolis in the interacting theory, bitwise checkpoint/resume, input validation.

Statistical errors come from independent chains: each chain's time average is one sample.
"""
import math

import numpy as np
import pytest
import torch

from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.hmc import HMC, INTEGRATORS, integrate
from rgdist.lattice.metropolis import LocalMetropolis

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ statistics helpers
def unique_momentum_mask(lat):
    """One representative of every pair {p, -p} (|phi~(p)| = |phi~(-p)| for real fields)."""
    idx = np.arange(lat.volume).reshape(lat.shape)
    neg = idx[np.ix_(*[(-np.arange(n)) % n for n in lat.shape])]
    return idx <= neg


def chi2_tails(chi2, dof):
    """(P[X >= chi2], P[X <= chi2]) for X ~ chi^2_dof (Wilson-Hilferty approximation)."""
    z = ((chi2 / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    upper = 0.5 * math.erfc(z / math.sqrt(2))
    return upper, 1 - upper


def g2_chain_means(sampler, n_traj):
    """Per-chain time average of |phi~(p)|^2 / V, shape (n_chains, *lattice.shape)."""
    lat = sampler.lattice
    acc = torch.zeros((sampler.n_chains, *lat.shape), dtype=torch.float64)
    for phi in sampler.iter_samples(n_traj):
        acc += lat.fft(phi).abs() ** 2 / lat.volume
    return (acc / n_traj).numpy()


def chi2_against(g_chains, g_exact, mask):
    mean = g_chains.mean(0)[mask]
    err = g_chains.std(0, ddof=1)[mask] / math.sqrt(g_chains.shape[0])
    return float((((mean - g_exact[mask]) / err) ** 2).sum()), int(mask.sum())


def observable_chain_means(sampler, n_traj):
    """Per-chain time averages of (M^2, M^4, G2(p1)) with G2(p1) averaged over directions."""
    lat = sampler.lattice
    sums = torch.zeros((sampler.n_chains, 3), dtype=torch.float64)
    p1 = lat.lowest_momentum_indices()
    for phi in sampler.iter_samples(n_traj):
        m = phi.mean(dim=lat.dims)
        power = lat.fft(phi).abs() ** 2 / lat.volume
        g_p1 = sum(power[(slice(None),) + i] for i in p1) / lat.d
        sums += torch.stack([m**2, m**4, g_p1], 1)
    return (sums / n_traj).numpy()


def derived(means, lat):
    """(chi, U, xi_2) from averages of (M^2, M^4, G2(p1)) (last axis)."""
    m2, m4, g_p1 = means[..., 0], means[..., 1], means[..., 2]
    chi = lat.volume * m2
    binder = 1 - m4 / (3 * m2**2)
    xi2 = np.sqrt((chi / g_p1 - 1) / (4 * math.sin(math.pi / lat.shape[0]) ** 2))
    return np.stack([chi, binder, xi2], -1)


def jackknife_over_chains(chain_means, lat):
    """Estimates and errors of derived(), recomputed in every leave-one-chain-out replica."""
    n = chain_means.shape[0]
    total = chain_means.sum(0)
    full = derived(total / n, lat)
    reps = derived((total[None] - chain_means) / (n - 1), lat)
    err = np.sqrt((n - 1) / n * ((reps - reps.mean(0)) ** 2).sum(0))
    return full, err


# ------------------------------------------------------------------ integrator
@pytest.mark.parametrize("integrator", INTEGRATORS)
@pytest.mark.parametrize("fourier_accel", [False, True])
@pytest.mark.parametrize("shape", [(8, 8), (4, 6, 5)])
def test_integrator_reversible(integrator, fourier_accel, shape):
    lat = Lattice(shape)
    action = Phi4Action(-1.0, 1.0, d=lat.d)
    hmc = HMC(action, lat, 4, integrator=integrator, fourier_accel=fourier_accel,
              fa_mass2=0.3, generator=gen(1))
    phi0 = hmc.phi.clone()
    pi0 = hmc.draw_momenta()
    phi_in, pi_in = phi0.clone(), pi0.clone()
    phi1, pi1 = hmc.integrate(phi0, pi0, step_size=0.1, n_steps=25)
    assert torch.equal(phi0, phi_in) and torch.equal(pi0, pi_in)  # inputs untouched
    assert (phi1 - phi0).abs().max() > 0.1  # it moved
    phi2, pi2 = hmc.integrate(phi1, -pi1, step_size=0.1, n_steps=25)
    torch.testing.assert_close(phi2, phi0, rtol=0, atol=1e-12)
    torch.testing.assert_close(-pi2, pi0, rtol=0, atol=1e-12)


def test_integrate_function_matches_free_harmonic_oscillator():
    """One d.o.f. with F = -w^2 q: leapfrog is the known linear map, omelyan is close to exact."""
    w2, eps, n = 2.0, 0.05, 40
    q0, p0 = torch.tensor([0.7], dtype=torch.float64), torch.tensor([-0.2], dtype=torch.float64)
    q, p = integrate(q0, p0, lambda x: -w2 * x, eps, n, "leapfrog")
    a = torch.tensor([[1 - eps**2 * w2 / 2, eps], [-w2 * eps * (1 - eps**2 * w2 / 4), 1 - eps**2 * w2 / 2]],
                     dtype=torch.float64)
    z = torch.linalg.matrix_power(a, n) @ torch.cat([q0, p0])
    torch.testing.assert_close(torch.cat([q, p]), z, rtol=0, atol=1e-13)
    q, p = integrate(q0, p0, lambda x: -w2 * x, eps, n, "omelyan")
    w, t = math.sqrt(w2), eps * n
    exact_q = q0 * math.cos(w * t) + p0 / w * math.sin(w * t)
    assert abs(q.item() - exact_q.item()) < 1e-4


@pytest.mark.parametrize("fourier_accel", [False, True])
def test_momenta_have_covariance_M(fourier_accel):
    """<|pi~(p)|^2>/V = M(p) mode by mode (chi^2), and <K> = V/2."""
    lat = Lattice((8, 6))
    hmc = HMC(Phi4Action(0.5, 0.0), lat, 2000, fourier_accel=fourier_accel, generator=gen(2))
    pi = hmc.draw_momenta()
    power = (lat.fft(pi).abs() ** 2 / lat.volume).numpy()
    m_p = (lat.phat2() + 0.5).numpy() if fourier_accel else np.ones(lat.shape)
    chi2, dof = chi2_against(power, m_p, unique_momentum_mask(lat))
    assert min(chi2_tails(chi2, dof)) > 1e-3, chi2 / dof
    k = hmc.kinetic.energy(pi)
    assert abs(k.mean().item() - lat.volume / 2) < 4 * k.std().item() / math.sqrt(len(k))


# ------------------------------------------------------------------ energy violation
def _equilibrated(integrator, fourier_accel, seed=3):
    lat = Lattice(8)
    hmc = HMC(Phi4Action(-1.0, 1.0), lat, 128, integrator=integrator,
              fourier_accel=fourier_accel, fa_mass2=0.5, generator=gen(seed))
    hmc.thermalize(100)
    return hmc


@pytest.mark.parametrize("integrator", INTEGRATORS)
@pytest.mark.parametrize("fourier_accel", [False, True])
def test_energy_error_scales_as_step_squared(integrator, fourier_accel):
    hmc = _equilibrated(integrator, fourier_accel)
    pi = hmc.kinetic.draw(hmc.n_chains, gen(4), "cpu", torch.float64)
    h0 = hmc.hamiltonian(hmc.phi, pi)
    steps = np.array([0.2, 0.1, 0.05, 0.025])  # trajectory length 1
    rms = []
    for eps in steps:
        phi1, pi1 = hmc.integrate(hmc.phi, pi, eps, int(round(1 / eps)))
        rms.append((hmc.hamiltonian(phi1, pi1) - h0).pow(2).mean().sqrt().item())
    slope = np.polyfit(np.log(steps), np.log(rms), 1)[0]
    assert abs(slope - 2) < 0.15, (slope, rms)


def test_omelyan_more_accurate_than_leapfrog():
    hmc = _equilibrated("leapfrog", False)
    pi = hmc.kinetic.draw(hmc.n_chains, gen(5), "cpu", torch.float64)
    h0 = hmc.hamiltonian(hmc.phi, pi)
    rms = {}
    for name in INTEGRATORS:
        phi1, pi1 = integrate(hmc.phi, pi, hmc.action.force, 0.1, 10, name)
        rms[name] = (hmc.hamiltonian(phi1, pi1) - h0).pow(2).mean().sqrt().item()
    # minimum-norm 2nd order: error coefficient ~10x smaller; at equal cost (2 forces/step) still smaller
    phi1, pi1 = integrate(hmc.phi, pi, hmc.action.force, 0.2, 5, "omelyan")
    rms_equal_cost = (hmc.hamiltonian(phi1, pi1) - h0).pow(2).mean().sqrt().item()
    assert rms["omelyan"] < 0.2 * rms["leapfrog"], rms
    assert rms_equal_cost < 0.5 * rms["leapfrog"], (rms_equal_cost, rms)


@pytest.mark.parametrize("integrator", INTEGRATORS)
def test_mean_exp_minus_dh_is_one(integrator):
    """Equilibrium identity <exp(-dH)> = 1, at a coarse step where it is not trivially met."""
    lat = Lattice(8)
    step = 0.25 if integrator == "leapfrog" else 0.5
    hmc = HMC(Phi4Action(-1.0, 1.0), lat, 256, step_size=step, n_steps=round(1 / step),
              integrator=integrator, generator=gen(6))
    hmc.thermalize(60, adapt=False)
    dh = torch.stack([hmc.trajectory()["dH"] for _ in range(150)])
    stats = hmc.stats()
    assert stats["n_traj"] == 150
    per_chain = torch.exp(-dh).mean(0).numpy()
    np.testing.assert_allclose(per_chain, stats["exp_minus_dH_per_chain"], rtol=1e-12)
    err = per_chain.std(ddof=1) / math.sqrt(len(per_chain))
    assert abs(per_chain.mean() - 1) < 4 * err, (per_chain.mean(), err)
    assert dh.mean() > 5 * err  # <dH> > 0 is resolved: the test has power
    assert 0.5 < stats["acceptance"] < 0.97


# ------------------------------------------------------------------ free theory
@pytest.mark.parametrize("n", [8, 16])
@pytest.mark.parametrize("fourier_accel", [False, True])
def test_free_theory_propagator_every_momentum(n, fourier_accel):
    """G2(p) = <|phi~(p)|^2>/V = 1/(phat^2 + m2) for all p; m2 off by 5% must be rejected."""
    m2 = 0.5
    lat = Lattice(n)
    hmc = HMC(Phi4Action(m2, 0.0), lat, 256, fourier_accel=fourier_accel,
              generator=gen(10 * n + fourier_accel))
    hmc.thermalize(60)
    g_chains = g2_chain_means(hmc, 200 if n == 8 else 150)
    mask = unique_momentum_mask(lat)
    chi2, dof = chi2_against(g_chains, lat.free_propagator(m2).numpy(), mask)
    upper, lower = chi2_tails(chi2, dof)
    assert upper > 1e-3 and lower > 1e-3, (chi2 / dof, dof)
    for wrong in (1.05 * m2, 0.95 * m2):
        chi2_w, _ = chi2_against(g_chains, lat.free_propagator(wrong).numpy(), mask)
        assert chi2_tails(chi2_w, dof)[0] < 1e-6, (wrong, chi2_w / dof)


# ------------------------------------------------------------------ interacting theory
def _compare_hmc_metropolis(n, n_chains, n_traj, n_sweeps, therm_traj, therm_sweeps):
    lat = Lattice(n)
    action = Phi4Action(-1.0, 1.0)
    hmc = HMC(action, lat, n_chains, generator=gen(101))
    hmc.thermalize(therm_traj)
    est_h, err_h = jackknife_over_chains(observable_chain_means(hmc, n_traj), lat)
    met = LocalMetropolis(action, lat, n_chains, generator=gen(202))
    met.thermalize(therm_sweeps)
    est_m, err_m = jackknife_over_chains(observable_chain_means(met, n_sweeps), lat)
    pulls = (est_h - est_m) / np.hypot(err_h, err_m)
    assert np.all(np.abs(pulls) < 3), dict(hmc=est_h, met=est_m, err_h=err_h, err_m=err_m,
                                           pulls=pulls)
    # precise enough to mean something: a few percent on chi and xi_2
    assert np.all(err_h[[0, 2]] / est_h[[0, 2]] < 0.04)
    assert 0.05 < est_h[1] < 0.6  # symmetric side of the transition, U clearly nonzero


def test_hmc_agrees_with_metropolis_small():
    _compare_hmc_metropolis(8, 128, 600, 2000, 200, 500)


@pytest.mark.slow
def test_hmc_agrees_with_metropolis_n16():
    _compare_hmc_metropolis(16, 128, 1500, 5000, 300, 1000)


# ------------------------------------------------------------------ adaptation and bookkeeping
def test_adaptation_keeps_trajectory_length_and_hits_target():
    lat = Lattice(8)
    hmc = HMC(Phi4Action(-1.0, 1.0), lat, 128, step_size=0.05, n_steps=20, target_accept=0.8,
              generator=gen(7))
    out = hmc.thermalize(150)
    assert hmc.step_size * hmc.n_steps == pytest.approx(1.0, rel=1e-12)
    assert hmc.n_steps < 20 and out["n_steps"] == hmc.n_steps  # 0.05 was far too small
    frozen = (hmc.step_size, hmc.n_steps)
    hmc.sample(100)
    assert (hmc.step_size, hmc.n_steps) == frozen  # never adapts while sampling
    acc = hmc.stats()["acceptance"]
    # n_steps is an integer: the frozen step sits within one n_steps of the target
    assert 0.7 < acc < 0.95, acc


def test_rejected_trajectories_leave_fields_unchanged():
    lat = Lattice(6)
    hmc = HMC(Phi4Action(-1.0, 1.0), lat, 16, step_size=3.0, n_steps=3, generator=gen(8))
    before = hmc.phi.clone()
    out = hmc.trajectory()
    assert not out["accepted"].any()  # the integrator blew up (dH huge or not finite)
    assert torch.equal(hmc.phi, before)
    assert torch.all(out["acc_prob"] == 0) or torch.all(out["acc_prob"] < 1e-10)


def test_trajectory_updates_exactly_the_accepted_chains():
    hmc = HMC(Phi4Action(-1.0, 1.0), Lattice(6), 64, step_size=0.35, n_steps=3, generator=gen(9))
    before = hmc.phi.clone()
    out = hmc.trajectory()
    changed = (hmc.phi != before).flatten(1).any(1)
    assert torch.equal(changed, out["accepted"])
    assert 0 < out["accepted"].sum() < 64


def test_sample_shape_and_thinning():
    lat = Lattice((4, 6))
    a = HMC(Phi4Action(0.5, 0.1), lat, 3, generator=gen(11))
    b = HMC(Phi4Action(0.5, 0.1), lat, 3, generator=gen(11))
    kept = a.sample(10, thin=3)
    assert kept.shape == (3, 3, 4, 6) and kept.dtype == torch.float64
    assert a.n_traj == 10
    for k in range(9):
        b.trajectory()
        if k == 2:
            torch.testing.assert_close(kept[0], b.phi, rtol=0, atol=0)
    assert torch.equal(kept[2], b.phi)
    assert a.sample(2, thin=3).shape == (0, 3, 4, 6)


def test_float32_runs_and_keeps_dtype():
    hmc = HMC(Phi4Action(-1.0, 1.0), Lattice(6), 8, dtype=torch.float32, fourier_accel=True,
              fa_mass2=0.5, generator=gen(15))
    hmc.thermalize(20)
    kept = hmc.sample(4, thin=2)
    assert kept.dtype == torch.float32 and torch.isfinite(kept).all()
    assert hmc.stats()["acceptance"] > 0.5


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("integrator,fourier_accel", [("leapfrog", False), ("omelyan", True)])
def test_state_dict_round_trip_bitwise(integrator, fourier_accel):
    lat = Lattice((6, 8))
    kw = dict(integrator=integrator, fourier_accel=fourier_accel, fa_mass2=0.4)
    a = HMC(Phi4Action(-0.8, 1.0), lat, 8, generator=gen(12), **kw)
    a.thermalize(10)
    for _ in range(5):
        a.trajectory()
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert all(v.dtype != object for v in state.values())
    cont = a.sample(7)
    b = HMC(Phi4Action(-0.8, 1.0), lat, 8, generator=gen(999), step_size=0.3, **kw)
    b.load_state_dict({k: v.copy() for k, v in state.items()})
    assert torch.equal(b.sample(7), cont)
    assert torch.equal(a.phi, b.phi)
    assert (a.n_traj, a.step_size, a.n_steps) == (b.n_traj, b.step_size, b.n_steps)
    sa, sb = a.stats(), b.stats()
    assert sa["n_traj"] == sb["n_traj"] == 12
    np.testing.assert_array_equal(sa["acceptance_per_chain"], sb["acceptance_per_chain"])
    np.testing.assert_array_equal(sa["exp_minus_dH_per_chain"], sb["exp_minus_dH_per_chain"])
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_thermalization_in_chunks_is_bitwise_identical():
    lat = Lattice(6)
    a = HMC(Phi4Action(-1.0, 1.0), lat, 8, generator=gen(13))
    a.thermalize(30)
    b = HMC(Phi4Action(-1.0, 1.0), lat, 8, generator=gen(13))
    b.thermalize(12)
    c = HMC(Phi4Action(-1.0, 1.0), lat, 8, generator=gen(0))
    c.load_state_dict(b.state_dict())
    c.thermalize(18)
    assert torch.equal(a.phi, c.phi)
    assert (a.step_size, a.n_steps) == (c.step_size, c.n_steps)


def test_load_state_dict_rejects_other_configuration():
    lat = Lattice(6)
    state = HMC(Phi4Action(-1.0, 1.0), lat, 4, generator=gen(14)).state_dict()
    with pytest.raises(ValueError, match="n_chains"):
        HMC(Phi4Action(-1.0, 1.0), lat, 5, generator=gen(14)).load_state_dict(state)
    with pytest.raises(ValueError, match="integrator"):
        HMC(Phi4Action(-1.0, 1.0), lat, 4, integrator="omelyan",
            generator=gen(14)).load_state_dict(state)
    with pytest.raises(ValueError, match="m2"):
        HMC(Phi4Action(-0.9, 1.0), lat, 4, generator=gen(14)).load_state_dict(state)
    del state["phi"]
    with pytest.raises(ValueError, match="phi"):
        HMC(Phi4Action(-1.0, 1.0), lat, 4, generator=gen(14)).load_state_dict(state)


# ------------------------------------------------------------------ input validation
def _make(**kw):
    args = dict(action=Phi4Action(0.5, 1.0), lattice=Lattice(4), n_chains=2, generator=gen(0))
    args.update(kw)
    return HMC(args.pop("action"), args.pop("lattice"), args.pop("n_chains"), **args)


@pytest.mark.parametrize("kw,name", [
    (dict(n_chains=0), "n_chains"),
    (dict(n_chains=2.5), "n_chains"),
    (dict(n_steps=0), "n_steps"),
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=-0.1), "step_size"),
    (dict(step_size=float("nan")), "step_size"),
    (dict(integrator="verlet"), "leapfrog"),
    (dict(target_accept=1.0), "target_accept"),
    (dict(target_accept=0.0), "target_accept"),
    (dict(fourier_accel=True, fa_mass2=0.0), "fa_mass2"),
    (dict(fourier_accel=True, fa_mass2=-1.0), "fa_mass2"),
    (dict(action=Phi4Action(-1.0, 1.0), fourier_accel=True), "fa_mass2"),
    (dict(fourier_accel=1), "fourier_accel"),
    (dict(generator=None), "generator"),
    (dict(action="phi4"), "action"),
    (dict(lattice=(4, 4)), "lattice"),
    (dict(lattice=Lattice(4, d=3)), "lattice.d"),
    (dict(dtype=torch.int64), "dtype"),
    (dict(phi0=torch.zeros(2, 4, 5, dtype=torch.float64)), "phi0"),
    (dict(phi0=torch.zeros(3, 4, 4, dtype=torch.float64)), "phi0"),
    (dict(phi0=torch.full((2, 4, 4), float("nan"), dtype=torch.float64)), "phi0"),
])
def test_bad_input_raises_value_error_naming_parameter(kw, name):
    with pytest.raises(ValueError) as info:
        _make(**kw)
    assert name in str(info.value)


def test_bad_run_arguments():
    hmc = _make()
    with pytest.raises(ValueError, match="thin"):
        hmc.sample(4, thin=0)
    with pytest.raises(ValueError, match="n_traj"):
        hmc.sample(-1)
    with pytest.raises(ValueError, match="n_traj"):
        hmc.thermalize(-3)
    with pytest.raises(ValueError, match="integrator"):
        integrate(hmc.phi, hmc.phi, hmc.action.force, 0.1, 3, "euler")
