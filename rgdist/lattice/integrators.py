"""Molecular-dynamics integrators of HMC (rgdist.lattice.hmc).

For H(phi, pi) = 1/2 pi^T M^{-1} pi + S[phi] (see rgdist.lattice.kinetic): both integrators are
symmetric, hence exactly reversible and volume preserving; both have energy error
dH = O(step_size^2) at fixed trajectory length:

* leapfrog: P(eps/2) Q(eps) P(eps/2)                    (1 force evaluation per step)
* omelyan (2nd-order minimum norm):
  P(l eps) Q(eps/2) P((1-2l) eps) Q(eps/2) P(l eps), l = 0.1931833275037836
                                                       (2 force evaluations per step)
with P(h): pi += h F(phi) and Q(h): phi += h M^{-1} pi. Adjacent P half steps are merged.
"""
from __future__ import annotations

from typing import Callable

import torch

from rgdist.lattice.mcmc import _positive_float, _positive_int

INTEGRATORS = ("leapfrog", "omelyan")
OMELYAN_LAMBDA = 0.1931833275037836


def _step_sizes(step_size, phi: torch.Tensor):
    """A float > 0, or per-configuration steps (batch,) > 0 broadcast over the field axes."""
    if not isinstance(step_size, torch.Tensor):
        return _positive_float("step_size", step_size)
    if step_size.shape != phi.shape[:1]:
        raise ValueError(f"step_size as a tensor must have shape {tuple(phi.shape[:1])} "
                         f"(one step per configuration), got {tuple(step_size.shape)}")
    if not (torch.isfinite(step_size).all() and (step_size > 0).all()):
        raise ValueError("step_size must hold finite numbers > 0")
    return step_size.to(phi.dtype).view((-1,) + (1,) * (phi.dim() - 1))


def integrate(
    phi: torch.Tensor,
    pi: torch.Tensor,
    force: Callable[[torch.Tensor], torch.Tensor],
    step_size: float | torch.Tensor,
    n_steps: int,
    integrator: str = "leapfrog",
    velocity: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Molecular-dynamics trajectory of n_steps steps of size step_size; inputs untouched.

    ``force(phi) = -dS/dphi``, ``velocity(pi) = M^{-1} pi`` (identity if None). Reversible:
    integrate(*integrate(phi, pi) with pi -> -pi) returns (phi, -pi) up to round-off.
    ``step_size`` is one number or a tensor of shape (batch,): one step per configuration.
    """
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    n_steps = _positive_int("n_steps", n_steps)
    eps = _step_sizes(step_size, phi)
    vel = velocity if velocity is not None else (lambda p: p)
    if integrator == "leapfrog":
        pi = pi + 0.5 * eps * force(phi)
        for k in range(n_steps):
            phi = phi + eps * vel(pi)
            kick = eps if k < n_steps - 1 else 0.5 * eps
            pi = pi + kick * force(phi)
        return phi, pi
    lam = OMELYAN_LAMBDA
    pi = pi + lam * eps * force(phi)
    for k in range(n_steps):
        phi = phi + 0.5 * eps * vel(pi)
        pi = pi + (1 - 2 * lam) * eps * force(phi)
        phi = phi + 0.5 * eps * vel(pi)
        kick = 2 * lam * eps if k < n_steps - 1 else lam * eps
        pi = pi + kick * force(phi)
    return phi, pi

