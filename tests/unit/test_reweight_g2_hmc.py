"""Reweighting G2(p) of real HMC data in m2 (issue 13 acceptance): the free theory.

Setting: lam = 0, N = 8 (V = 64, d = 2), HMC with Fourier acceleration (fa_mass2 = m2: every
free mode then has frequency 1, and a trajectory of length ~1.6 with jitter decorrelates the
modes almost completely), 64 independent chains, 50 thermalization + 400 kept trajectories
at m2_0 = 0.5: 25 600 configurations.  Every chain is one jackknife bin (64 bins), so the
errors are valid whatever the autocorrelation.

Expectation on paper (SPEC sections 2 and 3):
  * G2(p; m2) = <|phi~(p)|^2>/V = 1/(phat^2 + m2), phat^2 = sum_mu 4 sin^2(pi n_mu / 8);
  * the action is linear in m2 (dS/dm2 = E/2, E = sum_x phi_x^2), so w_n = exp(-0.05 E_n/2)
    reweights 0.5 -> 0.55 exactly; Var E = 2 sum_p G(p)^2 ~ 21, sd(dS) = 0.025 sd(E) ~ 0.11:
    Kish ESS/N ~ exp(-sd^2) ~ 0.987;
  * per configuration |phi~(p)|^2/V is G(p) times an Exp(1) variable (chi^2_1 for the four
    self-conjugate momenta p = -p), so sigma(G2(p)) ~ G(p)/sqrt(N_eff) (sqrt 2 larger for
    p = -p): at N_eff ~ 25 000, sigma(G2(0)) ~ sqrt(2) 1.82/160 ~ 0.016 and
    sigma(G2(p1)) ~ 0.88/160 ~ 0.0055 (times sqrt(2 tau_int) of |phi~(p)|^2);
  * chi^2 over the 34 independent modes (one of each pair {p, -p}; modes are independent in
    the free theory, correlated only through the shared weights at O((dm2/2)^2 G^2) ~ 1e-3)
    follows chi^2_34 (mean 34, sd 8.2), up to the noise of the jackknife variances (64 bins:
    mean x 63/61 = 1.03);
  * the wrong target 1/(phat^2 + 0.5) differs by ~0.05 G^2 per mode, chi^2 excess ~ 0.0025
    N_eff sum_unique G^2 / (1 + 1 at p = -p) ~ a few hundred: it must fail.
Cut: the test passes when the chi^2 p-value (two-sided: min of both tails, times 2) is
> 1e-3, and requires the wrong target's upper-tail p-value < 1e-12.

Measured (this file's seeds, 2-core dev machine): acceptance 0.872, ESS/N = 0.9865,
sigma(G2(0)) = 0.0161, sigma(G2(p1)) = 0.0070 (tau_int ~ 0.8 at p1); chi^2 = 29.8 / 34
(p = 0.65); wrong target 1/(phat^2 + 0.5): chi^2 = 402 (p = 2e-64); the un-reweighted data
(G2 at 0.5) against 1/(phat^2 + 0.55): chi^2 = 252.  About 3 s.
"""
import math

import numpy as np
import torch

from rgdist.analysis.reweight_m2 import MultiHistogram, config_data
from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.hmc import HMC
from rgdist.seeding import torch_generator

N, V = 8, 64
M2_DATA, M2_TARGET = 0.5, 0.55
N_CHAINS, N_THERM, N_TRAJ = 64, 50, 400
P_CUT, P_WRONG = 1e-3, 1e-12


def phat2():
    s = 4 * np.sin(np.pi * np.arange(N) / N) ** 2
    return s[:, None] + s[None, :]


def unique_modes():
    """Mask of one representative of every pair {p, -p} (34 of 64 on 8x8)."""
    idx = np.arange(V).reshape(N, N)
    neg = idx[np.ix_((-np.arange(N)) % N, (-np.arange(N)) % N)]
    return idx <= neg


def chi2_sf(x: float, k: int) -> float:
    """Upper tail P(chi^2_k > x) (regularized gamma Q(k/2, x/2); series or continued fraction)."""
    a, y = 0.5 * k, 0.5 * x
    if y <= 0:
        return 1.0
    log_pre = a * math.log(y) - y - math.lgamma(a)
    if y < a + 1:  # series for P(a, y)
        term = total = 1.0 / a
        n = 1
        while abs(term) > 1e-16 * abs(total):
            term *= y / (a + n)
            total += term
            n += 1
        return max(0.0, 1.0 - math.exp(log_pre) * total)
    # Lentz continued fraction for Q(a, y)
    b, c, d = y + 1 - a, 1e300, 1.0 / (y + 1 - a)
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(log_pre) * h


def test_chi2_sf_against_the_closed_form_for_even_dof():
    """For even k, P(chi^2_k > x) = exp(-x/2) sum_{i < k/2} (x/2)^i / i! exactly."""
    for k in (2, 8, 34):
        for x in (0.5, 10.0, 34.0, 56.0, 120.0, 585.0):
            exact = math.exp(-x / 2) * sum((x / 2) ** i / math.factorial(i) for i in range(k // 2))
            assert abs(chi2_sf(x, k) - exact) <= 1e-10 * max(exact, 1e-300) + 1e-14, (k, x)


def free_hmc():
    """(E, per-config |phi~(p)|^2/V (n, 8, 8), chain labels, acceptance) at m2 = 0.5."""
    torch.set_num_threads(1)
    hmc = HMC(Phi4Action(M2_DATA, 0.0), Lattice(N), N_CHAINS, step_size=0.2, n_steps=8,
              fourier_accel=True, target_accept=0.9,
              generator=torch_generator(2718, "free-g2-hmc"))
    hmc.thermalize(N_THERM)
    kept = hmc.sample(N_TRAJ).numpy()                               # (T, chains, N, N)
    fields = np.swapaxes(kept, 0, 1).reshape(-1, N, N)              # ordered (chain, time)
    cd = config_data(fields, full_g2=True)
    return cd["phi2_sum"], cd["g2"], np.repeat(np.arange(N_CHAINS), N_TRAJ), hmc.stats()["acceptance"]


def chi2_modes(value, error, exact):
    mask = unique_modes()
    z = (value[mask] - exact[mask]) / error[mask]
    return float(np.sum(z ** 2)), int(mask.sum())


def test_free_hmc_g2_reweighted_05_to_055_chi2_and_wrong_target_fails():
    e, g2, chain, acc = free_hmc()
    assert acc > 0.7, acc
    mh = MultiHistogram([M2_DATA], [e], [{"g2": g2}], bins=[chain], shape=(N, N))
    ess = mh.ess(M2_TARGET) / mh.n_total
    assert 0.97 < ess < 1.0, ess                                    # paper: ~ 0.987
    est = mh.g2(M2_TARGET)
    exact = 1.0 / (phat2() + M2_TARGET)
    chi2, dof = chi2_modes(est.value, est.error, exact)
    p_upper = chi2_sf(chi2, dof)
    p_two = 2 * min(p_upper, 1 - p_upper)
    chi2_wrong, _ = chi2_modes(est.value, est.error, 1.0 / (phat2() + M2_DATA))
    p_wrong = chi2_sf(chi2_wrong, dof)
    # the check has power: the plain average at 0.5 against the 0.55 law fails as well
    plain = mh.g2(M2_DATA)
    chi2_plain, _ = chi2_modes(plain.value, plain.error, exact)
    print(f"acceptance {acc:.3f}; ESS/N {ess:.4f}; sigma(G2(0)) {est.error[0, 0]:.4f}, "
          f"sigma(G2(p1)) {est.error[1, 0]:.4f}; chi2 {chi2:.1f}/{dof} (p = {p_two:.3g}); wrong "
          f"target chi2 {chi2_wrong:.1f} (p = {p_wrong:.3g}); un-reweighted chi2 {chi2_plain:.1f}")
    assert est.value.shape == (N, N)
    assert p_two > P_CUT, (chi2, dof)
    assert p_wrong < P_WRONG, (chi2_wrong, dof)
    assert chi2_sf(chi2_plain, dof) < P_WRONG, chi2_plain
    # sigma of the zero mode as estimated on paper (G/sqrt(N_eff), chi^2_1: sqrt(2) larger)
    assert 0.5 < est.error[0, 0] / (math.sqrt(2) * exact[0, 0] / math.sqrt(mh.n_total)) < 2
