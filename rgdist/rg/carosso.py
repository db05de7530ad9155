"""The heat-kernel (gradient-flow) noising scheme, registered as ``carosso``:
alpha = phat^2 + mu2, beta^2 = 1 (rgdist.rg.base for the closed-form conventions)."""
from __future__ import annotations

import torch

from rgdist.lattice import Lattice
from rgdist.rg.base import _D, Scheme, _param


class CarossoScheme(Scheme):
    """Heat-equation (gradient-flow) RG: alpha = w, beta^2 = 1, with w = phat^2 + mu2.

    A_t = exp(-w t),  Sigma_t = (1 - exp(-2 w t)) / (2 w)  (= t at w = 0). Tends to the free
    field of spectrum 1/(2w) (variance preserving in the seed's sense).
    """

    name = "carosso"
    default_t_min = _D["carosso"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["carosso"]["T"],
                 mu2: float = _D["carosso"]["mu2"]):
        super().__init__(lattice, T)
        self.mu2 = _param("mu2", mu2)

    def params(self) -> dict:
        return {"T": self.T, "mu2": self.mu2}

    def _log_A(self, t, p):
        return -(p + self.mu2) * t

    def _Sigma(self, t, p):
        w = p + self.mu2
        pos = w > 0
        w_safe = torch.where(pos, w, torch.ones_like(w))
        return torch.where(pos, -torch.expm1(-2 * w_safe * t) / (2 * w_safe), t + 0 * w)

    def _alpha(self, t, p):
        return (p + self.mu2) + 0 * t

    def _beta2(self, t, p):
        return torch.ones_like(p) + 0 * t

