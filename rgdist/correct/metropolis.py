"""Independence Metropolis-Hastings with the learned sampler as proposal (exact sampling).

Target p(phi) ~ exp(-S[phi]); proposal q(phi) with known log-density (the flow sampler with
``method="discrete"`` gives the exact density of the discrete sampler, see
rgdist.density). Importance log-weight  log w = -S[phi] - log q(phi).  Each chain
holds a state x with log w(x); a fresh proposal x' (independent of x) is accepted with

    P = min(1, w(x') / w(x)) = min(1, exp(log w(x') - log w(x))),

which satisfies detailed balance w.r.t. p for any q with q > 0 where p > 0. Chains are
independent and batched; every step consumes one proposal per chain. A chain starts at its
first proposal (the memory of a start drawn from q decays like the rejection probability;
``burn_in`` steps are discarded from the statistics).

Hybrid (``hmc_trajectories = k > 0``): after EVERY Metropolis step, every chain runs k HMC
trajectories (rgdist.lattice.HMC), which leave p invariant, so the composed kernel does too.
(Running HMC only after accepted proposals would NOT be valid: conditioned on acceptance the
state is not distributed as p.) Moving the state by HMC changes log q, so log w of the new
state is recomputed with ``proposal.log_prob`` (for the flow sampler: Newton inversion of the
discrete map, exact). MH and HMC acceptances are reported separately.

Statistics: the magnetization series of every chain gives tau_int (Gamma method, chains as
replica) and N_eff = N / (2 tau_int) of M, |M|, M^2, M^4; ensemble estimates come from an
ObservableAccumulator whose jackknife bins are groups of whole chains (independent, so the
errors include all autocorrelations), or contiguous time blocks when there are fewer chains
than bins.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rgdist.checks import check_positive_int as _pos_int
from rgdist.correct.reweight import log_weights
from rgdist.density import gaussian_log_density, ode_log_likelihood, ode_sample_with_logq
from rgdist.lattice.action import Phi4Action
from rgdist.lattice.geometry import Lattice
from rgdist.lattice.hmc import HMC
from rgdist.measure.accumulators import ObservableAccumulator
from rgdist.measure.stats import tau_int
from rgdist.rg.schemes import Scheme

SERIES = ("m", "abs_m", "m2", "m4")


# --------------------------------------------------------------------------- proposals
class GaussianProposal:
    """Gaussian proposal N(0, C), C circulant with eigenvalues ``spectrum`` (G2 units)."""

    def __init__(self, lattice: Lattice, spectrum: torch.Tensor, *, dtype=torch.float64):
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a Lattice, got {type(lattice).__name__}")
        self.lattice, self.dtype = lattice, dtype
        self.spectrum = torch.as_tensor(spectrum, dtype=torch.float64)
        gaussian_log_density(torch.zeros((1, *lattice.shape), dtype=torch.float64),
                             self.spectrum, lattice)  # validates the spectrum
        self.nfe = 0

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spectrum.to(generator.device)
        phi = self.lattice.colored_noise(spec, n, generator).to(self.dtype)
        return phi, self.log_prob(phi)

    def log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        return gaussian_log_density(phi, self.spectrum, self.lattice).to(torch.float64)


class FlowProposal:
    """The probability-flow sampler as a proposal with its log-density.

    ``integrator``: "heun" (default), "exponential" (Gaussian part exact, remainder at the
    step's start) or "implicit" (remainder at the step's end; explicit inverse). The
    change-of-variables density of ``method="discrete"`` is exact only where the discrete map
    is injective: explicit steps ("heun", "exponential") of a confining remainder (a phi^4-like
    effective action) fold for large fields, so use enough steps, or "implicit", whose map is
    a bijection while the learned effective action is not too concave.

    ``sample(n, generator) -> (phi, log_q)`` runs :func:`ode_sample_with_logq`;
    ``log_prob(phi)`` runs :func:`ode_log_likelihood` with the same grid and method (needed
    by the hybrid; Hutchinson probes there come from ``probe_generator``). Use
    method="discrete" (V <= 256) for exact MH; "trace"/"hutchinson" give an O(h^2)-accurate
    (and, for Hutchinson, noisy) density, hence a biased chain.
    ``nfe``/``vjp``: score evaluations / vector-Jacobian products per proposal.
    """

    def __init__(self, score_fn, scheme: Scheme, *, n_steps: int, method: str = "discrete",
                 grid: str = "uniform", t_min: float | None = None, prior_G=None,
                 n_probes: int = 1, batch_size: int | None = None,
                 max_rows: int = 8192, dtype=torch.float64,
                 probe_generator: torch.Generator | None = None, integrator: str = "heun"):
        if not isinstance(scheme, Scheme):
            raise ValueError(f"scheme must be a rgdist.rg.Scheme, got {type(scheme).__name__}")
        self.score_fn, self.scheme, self.lattice = score_fn, scheme, scheme.lattice
        self.kw = dict(n_steps=n_steps, method=method, grid=grid, t_min=t_min, prior_G=prior_G,
                       n_probes=n_probes, max_rows=max_rows, integrator=integrator)
        self.batch_size, self.dtype = batch_size, dtype
        self.probe_generator = probe_generator
        self.nfe = self.vjp = self.n_nonpositive_det = 0
        self.log_prob_vjp = 0

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        phi, log_q, info = ode_sample_with_logq(
            self.score_fn, self.scheme, n, generator=generator, batch_size=self.batch_size,
            dtype=self.dtype, return_info=True, **self.kw)
        self.nfe, self.vjp = info["nfe"], info["vjp"]
        self.n_nonpositive_det = int(info["n_nonpositive_det"])
        return phi, log_q

    def log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        log_q, info = ode_log_likelihood(self.score_fn, self.scheme, phi,
                                         generator=self.probe_generator,
                                         return_info=True, **self.kw)
        self.log_prob_vjp = info["vjp"]
        return log_q


class ReplayProposal:
    """Proposals drawn beforehand, handed out in order by ``sample(n, generator)`` (the
    generator is not used: the draws are already made). Independence MH only needs i.i.d.
    draws of q with their log q, so replaying a stored i.i.d. stream is the same chain (and
    the same draws can serve reweighting). ``log_prob`` (needed by the hybrid) delegates to
    ``flow``, a proposal with the same sampler settings, when given."""

    def __init__(self, phi: torch.Tensor, log_q: torch.Tensor, flow=None):
        if phi.shape[0] != log_q.shape[0]:
            raise ValueError(f"phi and log_q must have the same length, got {phi.shape[0]} and "
                             f"{log_q.shape[0]}")
        self.phi, self.log_q, self.flow, self.next = phi, log_q, flow, 0
        if flow is not None:
            self.log_prob = flow.log_prob

    def sample(self, n: int, generator: torch.Generator):
        if self.next + n > self.phi.shape[0]:
            raise ValueError(f"only {self.phi.shape[0]} proposals were drawn; asked for more")
        sl = slice(self.next, self.next + n)
        self.next += n
        return self.phi[sl], self.log_q[sl]


# --------------------------------------------------------------------------- results
@dataclass
class MHResult:
    """Outcome of :meth:`IndependenceMH.run` (statistics over the recorded steps).

    acceptance: MH acceptance over all chains and steps; acceptance_per_chain (n_chains,);
    series: name -> (n_recorded, n_chains) arrays of M, |M|, M^2, M^4 per chain and step;
    tau_int: name -> (tau, dtau, W) in MH steps; ess: name -> N / (2 tau);
    estimates: ObservableAccumulator.estimate() of the recorded chain states;
    hmc: None or {"trajectories_per_step", "acceptance"}; n_proposals; wall_s.
    """

    phi: torch.Tensor
    acceptance: float
    acceptance_per_chain: np.ndarray
    series: dict[str, np.ndarray]
    tau_int: dict[str, tuple[float, float, int]]
    ess: dict[str, float]
    estimates: dict
    accumulator: ObservableAccumulator
    n_proposals: int
    wall_s: float
    hmc: dict | None = None
    log_w: torch.Tensor | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- the chain
class IndependenceMH:
    """Batched independence Metropolis-Hastings chains of ``action`` with ``proposal``.

    ``proposal.sample(n, generator) -> (phi, log_q)``; for the hybrid also
    ``proposal.log_prob(phi) -> log_q``. ``hmc_trajectories`` HMC trajectories (parameters
    ``hmc_params``: step_size, n_steps, integrator, fourier_accel, fa_mass2) follow every MH
    step. ``generator`` drives the proposals, the accept/reject draws and the HMC.
    """

    def __init__(self, proposal, action: Phi4Action, lattice: Lattice, n_chains: int, *,
                 generator: torch.Generator, hmc_trajectories: int = 0,
                 hmc_params: dict | None = None):
        if not callable(getattr(proposal, "sample", None)):
            raise ValueError("proposal must provide sample(n, generator) -> (phi, log_q)")
        if not isinstance(action, Phi4Action):
            raise ValueError(f"action must be a Phi4Action, got {type(action).__name__}")
        if not isinstance(lattice, Lattice) or lattice.d != action.d:
            raise ValueError("lattice must be a Lattice with the action's dimension d")
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.proposal, self.action, self.lattice = proposal, action, lattice
        self.n_chains = _pos_int("n_chains", n_chains)
        self.generator = generator
        self.hmc_trajectories = _pos_int("hmc_trajectories", hmc_trajectories, 0)
        if self.hmc_trajectories and not callable(getattr(proposal, "log_prob", None)):
            raise ValueError("hmc_trajectories > 0 needs proposal.log_prob(phi) (the proposal "
                             "density at states moved by HMC)")
        self.phi, log_q = proposal.sample(self.n_chains, generator)
        lattice.check_field(self.phi, "proposal sample")
        self.log_w = self._log_w(self.phi, log_q)
        self.hmc = None
        if self.hmc_trajectories:
            params = dict(hmc_params or {})
            bad = sorted(set(params) - {"step_size", "n_steps", "integrator", "fourier_accel",
                                        "fa_mass2", "jitter"})
            if bad:
                raise ValueError(f"unknown hmc_params {bad}; allowed: step_size, n_steps, "
                                 "integrator, fourier_accel, fa_mass2, jitter")
            self.hmc = HMC(action, lattice, self.n_chains, generator=generator,
                           device=self.phi.device, dtype=self.phi.dtype, phi0=self.phi, **params)
        self.n_proposals = self.n_chains
        self.n_steps_done = 0

    def _log_w(self, phi: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return log_weights(phi, log_q, self.action)

    @torch.no_grad()
    def step(self) -> dict:
        """One MH step for every chain (then the HMC trajectories); returns the accept mask."""
        prop, log_q = self.proposal.sample(self.n_chains, self.generator)
        lw_new = self._log_w(prop, log_q)
        log_u = torch.rand(self.n_chains, generator=self.generator, device=lw_new.device,
                           dtype=torch.float64).log()
        accept = (lw_new > -torch.inf) & (log_u < lw_new - self.log_w)
        mask = accept.view((-1,) + (1,) * self.lattice.d)
        self.phi = torch.where(mask, prop, self.phi)
        self.log_w = torch.where(accept, lw_new, self.log_w)
        self.n_proposals += self.n_chains
        self.n_steps_done += 1
        out = {"accepted": accept}
        if self.hmc is not None:
            self.hmc.phi = self.phi.clone()
            hmc_acc = torch.zeros(self.n_chains, dtype=torch.float64, device=self.phi.device)
            for _ in range(self.hmc_trajectories):
                hmc_acc += self.hmc.trajectory()["accepted"].to(torch.float64)
            moved = (self.hmc.phi != self.phi).flatten(1).any(1)
            self.phi = self.hmc.phi.clone()
            if bool(moved.any()):
                idx = moved.nonzero().squeeze(1)
                sub = self.phi[idx]
                self.log_w[idx] = self._log_w(sub, self.proposal.log_prob(sub))
            out["hmc_accepted"] = hmc_acc / self.hmc_trajectories
        return out

    def run(self, n_steps: int, *, burn_in: int = 0, n_bins: int = 32, callback=None) -> MHResult:
        """Run ``burn_in`` unrecorded and ``n_steps`` recorded steps; see :class:`MHResult`."""
        n_steps = _pos_int("n_steps", n_steps, 2)
        burn_in = _pos_int("burn_in", burn_in, 0)
        n_bins = _pos_int("n_bins", n_bins, 2)
        t0 = time.monotonic()
        for _ in range(burn_in):
            self.step()
        C = self.n_chains
        acc = ObservableAccumulator(self.lattice, n_bins)
        chain_bins = torch.arange(C, device=self.phi.device) % n_bins
        series = {k: np.empty((n_steps, C)) for k in SERIES}
        n_acc = torch.zeros(C, dtype=torch.float64)
        hmc_acc = 0.0
        for k in range(n_steps):
            out = self.step()
            n_acc += out["accepted"].to(torch.float64).cpu()
            if "hmc_accepted" in out:
                hmc_acc += float(out["hmc_accepted"].mean())
            bins = chain_bins if C >= n_bins else (k * n_bins) // n_steps
            acc.update(self.phi, bins)
            m = self.phi.flatten(1).mean(1).to(torch.float64).cpu().numpy()
            series["m"][k], series["abs_m"][k] = m, np.abs(m)
            series["m2"][k], series["m4"][k] = m * m, m ** 4
            if callback is not None:
                callback({"step": k + 1, "phi": self.phi, "accepted": out["accepted"]})
        taus = {k: tau_int(v) for k, v in series.items()}
        ess = {k: float(series[k].size / (2.0 * taus[k][0])) for k in series}
        acc_chain = (n_acc / n_steps).numpy()
        hmc = None
        if self.hmc is not None:
            hmc = {"trajectories_per_step": self.hmc_trajectories, "acceptance": hmc_acc / n_steps}
        return MHResult(phi=self.phi.clone(), acceptance=float(acc_chain.mean()),
                        acceptance_per_chain=acc_chain, series=series, tau_int=taus, ess=ess,
                        estimates=acc.estimate(), accumulator=acc, n_proposals=self.n_proposals,
                        wall_s=time.monotonic() - t0, hmc=hmc, log_w=self.log_w.clone())


def independence_mh(proposal, action: Phi4Action, lattice: Lattice, n_chains: int,
                    n_steps: int, *, generator: torch.Generator, burn_in: int = 0,
                    n_bins: int = 32, hmc_trajectories: int = 0,
                    hmc_params: dict | None = None) -> MHResult:
    """Build :class:`IndependenceMH` and run it (see there)."""
    chain = IndependenceMH(proposal, action, lattice, n_chains, generator=generator,
                           hmc_trajectories=hmc_trajectories, hmc_params=hmc_params)
    return chain.run(n_steps, burn_in=burn_in, n_bins=n_bins)
