"""Batched Hybrid Monte Carlo for the lattice phi^4 action (the ground-truth sampler).

Every chain is independent: one momentum refresh, one molecular-dynamics trajectory and one
Metropolis accept/reject per chain and trajectory.

Hamiltonian H(phi, pi) = 1/2 pi^T M^{-1} pi + S[phi] with pi ~ N(0, M): plain HMC has M = 1,
Fourier acceleration M(p) = phat^2 + fa_mass2 (rgdist.lattice.kinetic, which also derives the
normalization and the leapfrog stability bounds). Integrators leapfrog and omelyan:
rgdist.lattice.integrators. Validation, dual averaging and state-dict checks shared with
LocalMetropolis: rgdist.lattice.mcmc. The names moved there stay importable from here.

Randomized trajectory length (``jitter``, on by default): every trajectory of every chain
draws its own step size uniformly in [eps (1 - jitter), eps (1 + jitter)] from the sampler's
generator, at the fixed n_steps, so its length is uniform in tau (1 -+ jitter). A leapfrog
trajectory rotates a free mode of frequency omega by theta = n_steps acos(1 - (eps omega)^2/2)
~ omega tau; with a fixed length, a mode with theta near a multiple of pi is (anti)reflected
every trajectory and barely relaxes (the "HMC resonance"; in d = 2 plain HMC at tau = 1 the
modes near p = (pi, pi) have omega tau ~ 3). For theta uniform in theta0 (1 -+ j) a Gaussian
mode's |phi~(p)|^2 has the lag-one autocorrelation
    rho = E[cos^2 theta] = 1/2 + cos(2 theta0) sin(2 theta0 j) / (4 theta0 j),
which is 1 at an exact resonance without jitter; its maximum over theta0 >= 3 pi/4 (the
resonant range) is 0.88 (j = 0.2), 0.76 (j = 0.3), 0.61 (j = 0.5). The default j = 0.3 thus
bounds the integrated autocorrelation time of every such mode's |phi~(p)|^2 by
(1 + rho)/(2 (1 - rho)) = 3.7 trajectories and relaxes a hot start by 1e-3 within 25
trajectories (j = 0.2: 7.8 and 54, too slow for short thermalizations such as the free field
check's 100); it cures the measured resonance (tests/unit/test_hmc_jitter.py). A larger j
costs acceptance: for leapfrog <dH> ~ eps^4 grows on average by 1 + 2 j^2 + j^4/5 (1.18 at
j = 0.3, 1.51 at j = 0.5), so the adapted base step shrinks by 4% (11%).
Each step size is a valid HMC kernel (reversible, volume preserving) chosen independently of
the state, so the mixture keeps the target distribution exact. The draws come from the same
generator as the momenta and the accept/reject uniforms (checkpointed); jitter = 0 draws
nothing and reproduces the fixed-length chain exactly. Step-size adaptation tunes the base
step eps (the jittered acceptance is what it sees).

Step-size adaptation (only inside :meth:`HMC.thermalize`): the trajectory length
tau = step_size * n_steps given at construction is KEPT FIXED; dual averaging (Nesterov;
Hoffman & Gelman's form) drives a continuous step eps_c toward the target acceptance
(the mean over chains of min(1, exp(-dH))), and the integrator uses
n_steps = ceil(tau / eps_c), step_size = tau / n_steps. At the end of thermalize the averaged
iterate is frozen the same way; sampling never adapts. Adaptation state is part of
``state_dict`` so thermalization in chunks is bitwise identical to one call.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from rgdist.lattice.action import Phi4Action
from rgdist.lattice.geometry import Lattice
from rgdist.lattice.integrators import INTEGRATORS, OMELYAN_LAMBDA, integrate
from rgdist.lattice.kinetic import Kinetic
from rgdist.lattice.mcmc import (
    DualAveraging,
    _jitter,
    _positive_float,
    _positive_int,
    _scalar,
    _unit_interval,
    check_config,
    check_keys,
    check_sampler_args,
    initial_fields,
)
from rgdist.seeding import generator_state, set_generator_state

__all__ = [
    "HMC", "DEFAULT_JITTER",
    # re-exported from the modules split off (their old home was this module)
    "INTEGRATORS", "OMELYAN_LAMBDA", "integrate", "Kinetic", "DualAveraging",
    "check_config", "check_keys", "check_sampler_args", "initial_fields",
]

DEFAULT_JITTER = 0.3  # relative half-width of the per-trajectory step-size draw (module docstring)


# --------------------------------------------------------------------------- HMC
class HMC:
    """Batched HMC of ``n_chains`` independent chains of ``action`` on ``lattice``.

    ``phi0=None`` starts hot (unit white noise from ``generator``). See the module docstrings
    (this one and rgdist.lattice.kinetic / .integrators) for the Hamiltonian, integrators,
    Fourier acceleration (fa_mass2 defaults to action.m2, and must be given when m2 <= 0),
    the randomized trajectory length (``jitter`` in [0, 1), default :data:`DEFAULT_JITTER`;
    0 = fixed length) and the step-size adaptation (fixed mean trajectory length;
    ``step_size`` is always the base step before jitter).
    """

    def __init__(self, action: Phi4Action, lattice: Lattice, n_chains: int, *,
                 step_size: float = 0.1, n_steps: int = 10, integrator: str = "leapfrog",
                 fourier_accel: bool = False, fa_mass2: float | None = None,
                 target_accept: float = 0.9, jitter: float = DEFAULT_JITTER,
                 generator: torch.Generator,
                 device="cpu", dtype=torch.float64, phi0: torch.Tensor | None = None):
        self.n_chains, self.device, self.dtype = check_sampler_args(
            action, lattice, n_chains, generator, device, dtype)
        self.action, self.lattice, self.generator = action, lattice, generator
        self.step_size = _positive_float("step_size", step_size)
        self.n_steps = _positive_int("n_steps", n_steps)
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
        self.integrator = integrator
        if not isinstance(fourier_accel, bool):
            raise ValueError(f"fourier_accel must be True or False, got {fourier_accel!r}")
        self.fourier_accel = fourier_accel
        if fourier_accel:
            if fa_mass2 is None:
                if action.m2 <= 0:
                    raise ValueError(
                        f"fa_mass2 must be given (a finite number > 0) with fourier_accel=True "
                        f"when m2 <= 0 (m2 = {action.m2})")
                fa_mass2 = action.m2
            self.fa_mass2 = _positive_float("fa_mass2", fa_mass2)
            self.kinetic = Kinetic.fourier(lattice, self.fa_mass2, self.device, self.dtype)
        else:
            if fa_mass2 is not None:
                _positive_float("fa_mass2", fa_mass2)
            self.fa_mass2 = float("nan")
            self.kinetic = Kinetic(lattice)
        self.target_accept = _unit_interval("target_accept", target_accept)
        self.jitter = _jitter(jitter)
        self.traj_length = self.step_size * self.n_steps
        self.adapter = DualAveraging(self.step_size, self.target_accept,
                                     lo=self.traj_length * 1e-4, hi=self.traj_length)
        self.phi = initial_fields(lattice, self.n_chains, phi0, generator, self.device, self.dtype)
        self.n_traj = 0
        self.reset_stats()

    # ---------------------------------------------------------------- dynamics
    def hamiltonian(self, phi: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """H = 1/2 pi^T M^{-1} pi + S[phi] per chain."""
        return self.kinetic.energy(pi) + self.action(phi)

    def integrate(self, phi: torch.Tensor, pi: torch.Tensor,
                  step_size: float | torch.Tensor | None = None,
                  n_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One MD trajectory with this sampler's integrator and kinetic term (no jitter:
        ``step_size`` defaults to the base step; a tensor gives one step per chain)."""
        return integrate(phi, pi, self.action.force,
                         self.step_size if step_size is None else step_size,
                         self.n_steps if n_steps is None else n_steps,
                         self.integrator, self.kinetic.velocity)

    def draw_momenta(self) -> torch.Tensor:
        return self.kinetic.draw(self.n_chains, self.generator, self.device, self.dtype)

    def draw_step_sizes(self) -> float | torch.Tensor:
        """This trajectory's steps: step_size, or per chain uniform in step_size (1 -+ jitter)."""
        if self.jitter == 0:
            return self.step_size
        u = torch.rand(self.n_chains, generator=self.generator, device=self.device,
                       dtype=self.dtype)
        return self.step_size * (1 + self.jitter * (2 * u - 1))

    @torch.no_grad()
    def trajectory(self) -> dict[str, torch.Tensor]:
        """One trajectory for every chain.

        Returns ``accepted`` (bool, per chain), ``dH`` (H_end - H_start, per chain) and
        ``acc_prob`` = min(1, exp(-dH)) (0 where dH is not finite). Random numbers, in order:
        momenta, the chains' step sizes (only if jitter > 0), accept/reject uniforms.
        """
        pi = self.draw_momenta()
        eps = self.draw_step_sizes()
        h0 = self.hamiltonian(self.phi, pi)
        phi1, pi1 = self.integrate(self.phi, pi, step_size=eps)
        dh = self.hamiltonian(phi1, pi1) - h0
        log_u = torch.rand(self.n_chains, generator=self.generator, device=self.device,
                           dtype=self.dtype).log()
        finite = torch.isfinite(dh)
        accepted = finite & (log_u < -dh)
        mask = accepted.view((-1,) + (1,) * self.lattice.d)
        self.phi = torch.where(mask, phi1, self.phi)
        acc_prob = torch.where(finite, torch.exp(-dh.clamp_min(0)), torch.zeros_like(dh))
        self.n_traj += 1
        self._n_stats += 1
        self._accept_count += accepted.to(torch.int64)
        self._acc_prob_sum += acc_prob
        self._dh_sum += torch.where(finite, dh, torch.zeros_like(dh))
        self._exp_mdh_sum += torch.where(finite, torch.exp(-dh), torch.zeros_like(dh))
        return {"accepted": accepted, "dH": dh, "acc_prob": acc_prob}

    def _set_step(self, eps: float) -> None:
        self.n_steps = max(1, math.ceil(self.traj_length / eps - 1e-9))
        self.step_size = self.traj_length / self.n_steps

    def thermalize(self, n_traj: int, adapt: bool = True) -> dict[str, float]:
        """Run n_traj trajectories; with ``adapt`` tune the step at fixed trajectory length.

        The adaptation continues across calls (its state is checkpointed); at the end of
        each call the averaged step is frozen. Acceptance statistics are reset afterwards.
        Returns the acceptance over the call and the frozen step_size and n_steps.
        """
        n_traj = _positive_int("n_traj", n_traj, 0)
        acc_sum = 0.0
        for _ in range(n_traj):
            if adapt:
                self._set_step(self.adapter.step)
            out = self.trajectory()
            rate = float(out["acc_prob"].mean())
            acc_sum += rate
            if adapt:
                self.adapter.update(rate)
        if adapt and self.adapter.t > 0:
            self._set_step(self.adapter.final_step)
        self.reset_stats()
        return {"acceptance": acc_sum / max(n_traj, 1), "step_size": self.step_size,
                "n_steps": self.n_steps}

    def iter_samples(self, n_traj: int, thin: int = 1) -> Iterator[torch.Tensor]:
        """Yield a copy of the fields (n_chains, *shape) after every ``thin``-th trajectory."""
        n_traj = _positive_int("n_traj", n_traj, 0)
        thin = _positive_int("thin", thin)
        for k in range(1, n_traj + 1):
            self.trajectory()
            if k % thin == 0:
                yield self.phi.clone()

    def sample(self, n_traj: int, thin: int = 1) -> torch.Tensor:
        """Run n_traj trajectories; returns the kept fields, shape (n_traj // thin, n_chains, *shape)."""
        kept = list(self.iter_samples(n_traj, thin))
        if not kept:
            return self.phi.new_empty((0, self.n_chains, *self.lattice.shape))
        return torch.stack(kept)

    # ---------------------------------------------------------------- statistics
    def reset_stats(self) -> None:
        z = torch.zeros(self.n_chains, device=self.device, dtype=self.dtype)
        self._n_stats = 0
        self._accept_count = torch.zeros(self.n_chains, device=self.device, dtype=torch.int64)
        self._acc_prob_sum, self._dh_sum, self._exp_mdh_sum = z.clone(), z.clone(), z.clone()

    def stats(self) -> dict:
        """Acceptance statistics since the last reset (per chain arrays and overall means)."""
        n = max(self._n_stats, 1)
        acc = (self._accept_count.to(self.dtype) / n).cpu().numpy()
        exp_mdh = (self._exp_mdh_sum / n).cpu().numpy()
        return {"n_traj": self._n_stats, "acceptance": float(acc.mean()),
                "acceptance_per_chain": acc,
                "acc_prob": float((self._acc_prob_sum / n).mean()),
                "mean_dH": float((self._dh_sum / n).mean()),
                "mean_exp_minus_dH": float(exp_mdh.mean()),
                "exp_minus_dH_per_chain": exp_mdh}

    # ---------------------------------------------------------------- checkpoints
    def _config(self) -> dict[str, np.ndarray]:
        return {
            "config/shape": np.asarray(self.lattice.shape, dtype=np.int64),
            "config/n_chains": _scalar(np.int64(self.n_chains)),
            "config/m2": _scalar(self.action.m2), "config/lam": _scalar(self.action.lam),
            "config/integrator": _scalar(np.int64(INTEGRATORS.index(self.integrator))),
            "config/fourier_accel": _scalar(np.int64(self.fourier_accel)),
            "config/fa_mass2": _scalar(self.fa_mass2),
            "config/jitter": _scalar(self.jitter),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit for bit, as named numpy arrays (no pickle)."""
        d = self._config()
        d.update({
            "phi": self.phi.cpu().numpy().copy(),
            "generator": generator_state(self.generator),
            "step_size": _scalar(self.step_size),
            "n_steps": _scalar(np.int64(self.n_steps)),
            "traj_length": _scalar(self.traj_length),
            "target_accept": _scalar(self.target_accept),
            "n_traj": _scalar(np.int64(self.n_traj)),
            "stats/n": _scalar(np.int64(self._n_stats)),
            "stats/accept_count": self._accept_count.cpu().numpy().copy(),
            "stats/acc_prob_sum": self._acc_prob_sum.cpu().numpy().copy(),
            "stats/dH_sum": self._dh_sum.cpu().numpy().copy(),
            "stats/exp_minus_dH_sum": self._exp_mdh_sum.cpu().numpy().copy(),
        })
        d.update({f"adapt/{k}": v for k, v in self.adapter.state().items()})
        return d

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict`; the configuration must match this sampler's.

        Restores the fields, generator, step_size, n_steps, trajectory length, target
        acceptance, counters, statistics and adaptation state.
        """
        if isinstance(d, dict) and "config/jitter" not in d:
            d = {**d, "config/jitter": _scalar(0.0)}  # saved before jitter existed: fixed length
        check_config(self._config(), d)
        check_keys(d, self.state_dict().keys())
        if np.shape(d["phi"]) != (self.n_chains, *self.lattice.shape):
            raise ValueError(f"state dict 'phi' has shape {np.shape(d['phi'])}, expected "
                             f"{(self.n_chains, *self.lattice.shape)}")
        self.phi = torch.as_tensor(np.asarray(d["phi"]), dtype=self.dtype).to(self.device).clone()
        set_generator_state(self.generator, d["generator"])
        self.step_size = float(d["step_size"])
        self.n_steps = int(d["n_steps"])
        self.traj_length = float(d["traj_length"])
        self.target_accept = _unit_interval("target_accept", d["target_accept"])
        self.adapter.target = self.target_accept
        self.adapter.lo = math.log(self.traj_length * 1e-4)
        self.adapter.hi = math.log(self.traj_length)
        self.n_traj = int(d["n_traj"])
        self._n_stats = int(d["stats/n"])
        as_t = lambda k, dt: torch.as_tensor(np.asarray(d[k]), dtype=dt).to(self.device).clone()
        self._accept_count = as_t("stats/accept_count", torch.int64)
        self._acc_prob_sum = as_t("stats/acc_prob_sum", self.dtype)
        self._dh_sum = as_t("stats/dH_sum", self.dtype)
        self._exp_mdh_sum = as_t("stats/exp_minus_dH_sum", self.dtype)
        self.adapter.load({k: d[f"adapt/{k}"] for k in DualAveraging.KEYS})
