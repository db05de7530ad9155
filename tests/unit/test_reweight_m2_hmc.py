"""Reweighting in m2 of real HMC data: the free theory (fast) and lam = 1, N = 16 (slow).

Free theory (lam = 0, N = 8, fast): HMC with Fourier acceleration at m2 = 0.5 and 0.6, 32
chains x 500 trajectories each (tau_int(phi^2) ~ 0.7, every chain one jackknife bin).  The
reweighted <phi^2>(m2) = <E>/V must equal (1/V) sum_p 1/(phat^2 + m2) and chi = V <M^2> must
equal 1/m2, within 4 sigma (sigma: the jackknife error, ~ 7e-4 on <phi^2>, which changes by
~ 9e-3 between 0.5 and 0.55: the un-reweighted value fails by > 8 sigma).

Interacting theory (slow):

HMC with Fourier acceleration (fa_mass2 = 0.1, trajectory length 2, step adapted to 85 %
acceptance), 64 independent chains per m2, 200 thermalization and 1200 measured trajectories
kept every 2nd (tau_int(M^2) ~ 0.55 trajectories here).  Each chain is one jackknife bin, so
the errors are valid whatever the thinning.  m2 = -0.9 and -0.8 lie in the symmetric phase
(m2_c(lam = 1) ~ -1.27), xi2 ~ 2.8 and 2.3; sd(dS) = 0.05 sd(E) ~ 0.6 between them, so the
reweighted ESS is ~ 70 % of N.  chi changes by ~ 30 % across the pair (~ 15 sigma): without
reweighting the comparison fails.

Checks (the data sets are independent, so the combined sigma is the quadrature sum):
  * -0.9 -> -0.8 against HMC at -0.8: chi and U within 2 sigma (the required check);
  * -0.8 -> -0.9 against HMC at -0.9, xi2 in both directions, and the multi-histogram of
    (-0.9, -0.8) at -0.85 against HMC at -0.85: within 3 sigma (extra checks, 3 sigma
    because there are seven of them);
  * the un-reweighted -0.9 values differ from -0.8's by > 8 sigma (the check has power).
About 40 s on one core (marked slow); the free-theory test takes ~ 3 s.
"""
import math
import time

import numpy as np
import pytest
import torch

from rgdist.analysis.reweight_m2 import MultiHistogram, config_data
from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.hmc import HMC
from rgdist.measure import tau_int
from rgdist.seeding import torch_generator

LAM, N, FA_MASS2 = 1.0, 16, 0.1
N_CHAINS, N_THERM, N_TRAJ, THIN = 64, 200, 1200, 2
SEED = 31415


def run_hmc(m2, k):
    lat = Lattice(N)
    hmc = HMC(Phi4Action(m2, LAM), lat, N_CHAINS, step_size=0.2, n_steps=10, fourier_accel=True,
              fa_mass2=FA_MASS2, target_accept=0.85, generator=torch_generator(SEED, "reweight-hmc", k))
    hmc.thermalize(N_THERM)
    kept = hmc.sample(N_TRAJ, thin=THIN).numpy()                # (T, chains, N, N)
    acc = hmc.stats()["acceptance"]
    fields = np.swapaxes(kept, 0, 1).reshape(-1, N, N)          # ordered (chain, time)
    chain = np.repeat(np.arange(N_CHAINS), kept.shape[0])
    tau, _, _ = tau_int(kept.mean(axis=(2, 3)) ** 2)
    cd = config_data(fields)
    e = cd.pop("phi2_sum")
    return {"E": e, "data": cd, "chain": chain, "acceptance": acc, "tau_M2": tau}


def free_hmc(m2, k, n_chains=32, n_traj=500):
    """Free-field HMC (lam = 0, N = 8): E, {phi2 = E/V, M2 = M^2}, chain labels."""
    hmc = HMC(Phi4Action(m2, 0.0), Lattice(8), n_chains, step_size=0.2, n_steps=8,
              fourier_accel=True, target_accept=0.9, generator=torch_generator(SEED, "free-hmc", k))
    hmc.thermalize(50)
    kept = hmc.sample(n_traj).numpy()
    assert hmc.stats()["acceptance"] > 0.7
    cd = config_data(np.swapaxes(kept, 0, 1).reshape(-1, 8, 8))
    e = cd.pop("phi2_sum")
    return e, {"phi2": e / 64, "M2": cd["m"] ** 2}, np.repeat(np.arange(n_chains), n_traj)


def free_phi2(m2):
    s = 4 * np.sin(np.pi * np.arange(8) / 8) ** 2
    return float(np.mean(1.0 / (s[:, None] + s[None, :] + m2)))


def test_free_hmc_phi2_and_chi_reweighted():
    torch.set_num_threads(1)
    (e0, d0, b0), (e1, d1, b1) = free_hmc(0.5, 0), free_hmc(0.6, 1)
    targets = np.array([0.45, 0.5, 0.55, 0.6, 0.65])
    exact = np.array([free_phi2(m) for m in targets])
    single = MultiHistogram([0.5], [e0], [d0], bins=[b0], shape=(8, 8))
    multi = MultiHistogram([0.5, 0.6], [e0, e1], [d0, d1], bins=[b0, b1], shape=(8, 8))
    for name, mh, tg, ex in (("0.5 alone", single, targets[:3], exact[:3]),
                             ("0.5 + 0.6", multi, targets, exact)):
        est = mh.estimate(lambda m: {"phi2": m["phi2"], "chi": 64 * m["M2"]}, tg)
        phi2, chi = est["phi2"], est["chi"]
        pulls = (phi2.value - ex) / phi2.error
        pulls_chi = (chi.value - 1 / tg) / chi.error
        print(f"{name}: <phi^2> {np.round(phi2.value, 5)} +- {np.round(phi2.error, 5)} exact "
              f"{np.round(ex, 5)} pulls {np.round(pulls, 2)}; chi pulls {np.round(pulls_chi, 2)}")
        assert np.all(np.abs(pulls) < 4) and np.all(np.abs(pulls_chi) < 4)
    # the check has power: the plain average at 0.5 is far from the exact value at 0.55
    plain = (d0["phi2"].mean() - exact[2]) / single.estimate(lambda m: m["phi2"], 0.5, ["phi2"]).error
    assert abs(plain) > 8, plain


def direct(run, m2):
    mh = MultiHistogram([m2], [run["E"]], [run["data"]], bins=[run["chain"]], shape=(N, N))
    return mh.observables(m2)


def reweighted(runs, m2s, target):
    mh = MultiHistogram(m2s, [r["E"] for r in runs], [r["data"] for r in runs],
                        bins=[r["chain"] for r in runs], shape=(N, N))
    return mh, mh.observables(target)


def pull(a, b, key):
    return float((a[key].value - b[key].value) / math.hypot(a[key].error, b[key].error))


@pytest.mark.slow
def test_hmc_reweighting_lam1_n16():
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    m2s = (-0.9, -0.85, -0.8)
    runs = {m2: run_hmc(m2, k) for k, m2 in enumerate(m2s)}
    t_hmc = time.perf_counter() - t0
    for m2, r in runs.items():
        print(f"HMC m2 = {m2}: acceptance {r['acceptance']:.3f}, tau_int(M^2) {r['tau_M2']:.2f}, "
              f"{len(r['E'])} configurations")
        assert r["acceptance"] > 0.6
    own = {m2: direct(runs[m2], m2) for m2 in m2s}
    lines, pulls = [], {}
    for src, dst in ((-0.9, -0.8), (-0.8, -0.9)):
        mh, rw = reweighted([runs[src]], [src], dst)
        for key in ("chi", "binder", "xi2"):
            p = pull(rw, own[dst], key)
            pulls[(src, dst, key)] = p
            lines.append(f"{src} -> {dst}: {key} = {float(rw[key].value):.4f} +- {float(rw[key].error):.4f}"
                         f" vs HMC {float(own[dst][key].value):.4f} +- {float(own[dst][key].error):.4f}"
                         f" (pull {p:+.2f}; ESS {mh.ess(dst):.0f} of {mh.n_total})")
    mh, mid = reweighted([runs[-0.9], runs[-0.8]], [-0.9, -0.8], -0.85)
    for key in ("chi", "binder", "xi2"):
        p = pull(mid, own[-0.85], key)
        pulls[("multi", -0.85, key)] = p
        lines.append(f"(-0.9, -0.8) -> -0.85: {key} = {float(mid[key].value):.4f} +- "
                     f"{float(mid[key].error):.4f} vs HMC {float(own[-0.85][key].value):.4f} +- "
                     f"{float(own[-0.85][key].error):.4f} (pull {p:+.2f})")
    fe = mh.free_energies()
    lines.append(f"f(-0.8) - f(-0.9) = {fe.value[1]:.4f} +- {fe.error[1]:.4f}; ESS(-0.85) "
                 f"{mh.ess(-0.85):.0f} of {mh.n_total}")
    power = {key: pull(own[-0.9], own[-0.8], key) for key in ("chi", "binder", "xi2")}
    lines.append(f"no reweighting (-0.9 vs -0.8) pulls: { {k: round(v, 1) for k, v in power.items()} }")
    lines.append(f"HMC {t_hmc:.0f} s, total {time.perf_counter() - t0:.0f} s")
    print("\n".join(lines))
    assert abs(pulls[(-0.9, -0.8, "chi")]) < 2
    assert abs(pulls[(-0.9, -0.8, "binder")]) < 2
    for key, p in pulls.items():
        assert abs(p) < 3, key
    assert abs(power["chi"]) > 8
