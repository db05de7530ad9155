"""The white-noise baselines of score-based diffusion: variance preserving (VP, DDPM-like) and
variance exploding (VE) (rgdist.rg.base for the closed-form conventions)."""
from __future__ import annotations

import math

import torch

from rgdist.catalog import check_scheme_params
from rgdist.lattice import Lattice
from rgdist.rg.base import _D, Scheme, _param


class VPScheme(Scheme):
    """Variance-preserving baseline (DDPM-like), white noise.

    b(t) = beta_min + (t/T)(beta_max - beta_min), B(t) = int_0^t b;  alpha = b/2, beta^2 = b,
    A_t = exp(-B/2), Sigma_t = 1 - A_t^2 = -expm1(-B).
    """

    name = "vp"
    default_t_min = _D["vp"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["vp"]["T"],
                 beta_min: float = _D["vp"]["beta_min"], beta_max: float = _D["vp"]["beta_max"]):
        super().__init__(lattice, T)
        self.beta_min = _param("beta_min", beta_min)
        self.beta_max = _param("beta_max", beta_max)
        check_scheme_params(self.name, self.params())

    def params(self) -> dict:
        return {"T": self.T, "beta_min": self.beta_min, "beta_max": self.beta_max}

    def _b(self, t):
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def _B(self, t):
        return self.beta_min * t + (self.beta_max - self.beta_min) * t * t / (2 * self.T)

    def _log_A(self, t, p):
        return -0.5 * self._B(t) + 0 * p

    def _Sigma(self, t, p):
        return -torch.expm1(-self._B(t)) + 0 * p

    def _alpha(self, t, p):
        return 0.5 * self._b(t) + 0 * p

    def _beta2(self, t, p):
        return self._b(t) + 0 * p


class VEScheme(Scheme):
    """Variance-exploding baseline, white noise: A_t = 1,
    Sigma_t = sigma_min^2 ((sigma_max/sigma_min)^(2t/T) - 1), beta^2 = dSigma/dt, alpha = 0.

    sigma_max^2 must dominate the data spectrum (check :meth:`leftover`); the default 100 suits
    spectra up to ~ 10^2 (chi of 16^2 lattices in the broken phase).
    """

    name = "ve"
    default_t_min = _D["ve"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["ve"]["T"],
                 sigma_min: float = _D["ve"]["sigma_min"], sigma_max: float = _D["ve"]["sigma_max"]):
        super().__init__(lattice, T)
        self.sigma_min = _param("sigma_min", sigma_min)
        self.sigma_max = _param("sigma_max", sigma_max)
        check_scheme_params(self.name, self.params())

    def params(self) -> dict:
        return {"T": self.T, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def _rate(self):
        return 2 * math.log(self.sigma_max / self.sigma_min) / self.T

    def _log_A(self, t, p):
        return torch.zeros_like(p) + 0 * t

    def _Sigma(self, t, p):
        return self.sigma_min**2 * torch.expm1(self._rate() * t) + 0 * p

    def _alpha(self, t, p):
        return torch.zeros_like(p) + 0 * t

    def _beta2(self, t, p):
        return self.sigma_min**2 * self._rate() * torch.exp(self._rate() * t) + 0 * p

