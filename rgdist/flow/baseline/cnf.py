"""The baseline continuous normalizing flow: a Gaussian prior pushed through one neural ODE,

    d phi / d tau = v(phi, tau),   tau in [0, 1],   phi(0) ~ p0,

with v the :class:`~rgdist.flow.baseline.field.BaselineField`, and its exact-divergence
density.

Prior: the free field of mass m0 (``m0_sq``), spectrum C0(p) = 1/(phat^2 + m0^2) in G2 units
(<|phi~(p)|^2> = V C0(p)), with the closed form

    log p0(phi) = -1/(2V) sum_p |phi~(p)|^2 / C0(p)  -  1/2 sum_p log(2 pi C0(p)).

Density: along an ODE solution d/dtau log q_tau(phi(tau)) = -div v, so

    log q(phi(1)) = log p0(phi(0)) - int_0^1 div v(phi(tau), tau) dtau.

Both phi and l(tau) = int_0^tau div v are advanced by classical RK4 on the augmented state
(phi, l) with n_steps equal steps (default 50, as Gerdes et al.: 4 n_steps evaluations of v
and div v per sample). The RK4 integral of div v and the exact log|det| of the RK4 map both
approximate the exact flow's log-det with error O(h^4), so the density claimed for the map
actually run is off by O(h^4) (measured in tests/unit/test_flow_baseline.py).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as step_checkpoint

from rgdist.density import gaussian_log_density
from rgdist.density.steps import rk4_step
from rgdist.flow.baseline.checks import check_pos_float, check_pos_int, torch_dtype
from rgdist.flow.baseline.field import BaselineField
from rgdist.lattice import Lattice, Phi4Action

__all__ = ["BaselineCNF"]


class BaselineCNF(nn.Module):
    """Gaussian prior of mass ``m0_sq`` + :class:`BaselineField`, integrated by RK4 in
    ``n_steps`` steps; ``field_kw`` go to the field (channels, radius, dtype, init_seed...)."""

    def __init__(self, lattice: Lattice, *, m0_sq: float = 1.0, n_steps: int = 50, **field_kw):
        super().__init__()
        self.lattice = lattice
        self.m0_sq = check_pos_float("m0_sq", m0_sq)
        self.n_steps = check_pos_int("n_steps", n_steps)
        self.field = BaselineField(lattice, **field_kw)

    @property
    def dtype(self) -> torch.dtype:
        return self.field.param_dtype

    def cast(self, dtype) -> "BaselineCNF":
        """A copy whose parameters are this model's in ``dtype`` ("float32"/"float64" or a
        torch dtype; e.g. a float32-trained model widened exactly to float64 for sampling);
        ``self`` when it already is in ``dtype``."""
        dtype = torch_dtype(dtype)
        return self if dtype == self.dtype else copy.deepcopy(self).to(dtype)

    # ------------------------------------------------------------------ prior
    def prior_spectrum(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """C0(p) = 1/(phat^2 + m0^2) in G2 units, shape lattice.shape."""
        return 1.0 / (self.lattice.phat2(device, dtype) + self.m0_sq)

    def sample_prior(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, *shape) prior draws (float64 noise, cast to the model dtype)."""
        spec = self.prior_spectrum(generator.device)
        return self.lattice.colored_noise(spec, batch, generator).to(self.dtype)

    def prior_log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        """log p0(phi) in closed form (module docstring), float64, shape (B,)."""
        return gaussian_log_density(phi.to(torch.float64), self.prior_spectrum(phi.device), self.lattice)

    # ------------------------------------------------------------------ integration
    def _rk4_step(self, phi, ell, tau: float, h: float):
        """One classical RK4 step (rgdist.density.steps.rk4_step) of the augmented state
        (phi, l), dl/dtau = div v."""
        def field(x, t):
            v, div = self.field.divergence(x, t)
            return v, div, 0.0

        phi, integral, _ = rk4_step(field, phi, tau, tau + h)
        return phi, ell + integral.to(ell.dtype)

    def integrate(self, phi0: torch.Tensor, *, n_steps: int | None = None,
                  checkpoint: bool = False,
                  callback: Callable[[int, torch.Tensor], None] | None = None):
        """RK4 from tau = 0 to 1: ``(phi(1), int_0^1 div v dtau)``, the latter float64 (B,).

        ``checkpoint``: with gradients on, each step is recomputed in the backward pass
        (memory of one step instead of n_steps). ``callback(i, phi)`` sees phi(i / n_steps)
        for i = 0..n_steps.
        """
        n = self.n_steps if n_steps is None else check_pos_int("n_steps", n_steps)
        self.lattice.check_field(phi0)
        phi = phi0.to(self.dtype)
        ell = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
        h = 1.0 / n
        if callback is not None:
            callback(0, phi)
        for i in range(n):
            tau = i * h
            if checkpoint and torch.is_grad_enabled():
                phi, ell = step_checkpoint(self._rk4_step, phi, ell, tau, h,
                                           use_reentrant=False)
            else:
                phi, ell = self._rk4_step(phi, ell, tau, h)
            if callback is not None:
                callback(i + 1, phi)
        return phi, ell

    def sample(self, batch: int, generator: torch.Generator, *, n_steps: int | None = None,
               checkpoint: bool = False, callback=None):
        """``(phi, log_q)``: phi(1) of ``batch`` prior draws and log q(phi(1)), float64."""
        phi0 = self.sample_prior(check_pos_int("batch", batch), generator)
        phi, ell = self.integrate(phi0, n_steps=n_steps, checkpoint=checkpoint,
                                  callback=callback)
        return phi, self.prior_log_prob(phi0) - ell

    @staticmethod
    def log_weights(phi: torch.Tensor, log_q: torch.Tensor, action: Phi4Action) -> torch.Tensor:
        """Importance log-weights log w = -S(phi) - log q (float64; log Z not included)."""
        return -action(phi).to(torch.float64) - log_q
