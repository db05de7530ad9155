"""The Polchinski noising schemes: the regulator K_t = exp(-w / Lambda_t^2) flow of the
seed (variance collapsing) and its renormalized, variance-preserving form
(rgdist.rg.base for the closed-form conventions)."""
from __future__ import annotations

import torch

from rgdist.lattice import Lattice
from rgdist.rg.base import _D, Scheme, _param


class PolchinskiScheme(Scheme):
    """Polchinski RG with regulator K_t = exp(-w / Lambda_t^2), Lambda_t = e^(-t) Lambda0.

    w = phat^2 + mu2, reference propagator C = 1/(phat^2 + m02). The SDE of the seed is
    alpha = -d/dt log K_t = 2 w e^(2t)/Lambda0^2 and beta^2 = -(dK_t/dt) C = alpha K_t C, with
    the exact kernel A_t = K_t/K_0 = exp(-w (e^(2t) - 1)/Lambda0^2) and
    Sigma_t = C K_t (1 - K_t/K_0). Variance collapsing: every noised mode tends to 0.
    With mu2 = 0 the zero mode is frozen (K_t(0) = 1): see :meth:`Scheme.sample_prior`.
    Keep T modest: the prior spectrum spans K_T(high)/K_T(low) = exp(-(w_high - w_low) e^(2T)/Lambda0^2)
    and the sampler loses the collapsed modes to rounding once that nears 1e-32 (float64; check
    ``leftover(G)["dynamic_range"]``). The IR mass mu2 hardly changes that range (it cancels
    from the ratio) but noises the low modes faster. The defaults (rgdist.catalog:
    T = 2, Lambda0 = 4, mu2 = 4) keep the range near 1e12 in d = 2 and the zero mode's
    leftover near 2e-6 G(0).
    """

    name = "polchinski"
    default_t_min = _D["polchinski"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["polchinski"]["T"],
                 Lambda0: float = _D["polchinski"]["Lambda0"], m02: float = _D["polchinski"]["m02"],
                 mu2: float = _D["polchinski"]["mu2"]):
        super().__init__(lattice, T)
        self.Lambda0 = _param("Lambda0", Lambda0)
        self.m02 = _param("m02", m02)
        self.mu2 = _param("mu2", mu2)

    def params(self) -> dict:
        return {"T": self.T, "Lambda0": self.Lambda0, "m02": self.m02, "mu2": self.mu2}

    def _u(self, p):
        return (p + self.mu2) / self.Lambda0**2

    def _C(self, p):
        return 1.0 / (p + self.m02)

    def _log_K(self, t, p):
        return -self._u(p) * torch.exp(2 * t)

    def _log_A(self, t, p):
        return -self._u(p) * torch.expm1(2 * t)

    def _Sigma(self, t, p):
        return self._C(p) * torch.exp(self._log_K(t, p)) * -torch.expm1(self._log_A(t, p))

    def _alpha(self, t, p):
        return 2 * self._u(p) * torch.exp(2 * t)

    def _beta2(self, t, p):
        return self._alpha(t, p) * torch.exp(self._log_K(t, p)) * self._C(p)

    def _frozen(self, p):
        return (p + self.mu2) == 0


class RenormalizedPolchinskiScheme(PolchinskiScheme):
    """Variance-preserving Polchinski: the field is measured in units of the reference
    propagator, mode by mode.

    With chi~ = C^(-1/2) phi~ the seed's "renormalized" flow is dchi = -alpha chi dt +
    sqrt(2 alpha) dW, which tends to white noise: A_t = K_t/K_0, Sigma^chi_t = 1 - A_t^2.
    Back in the field's own units (so data, scores and spectra keep one meaning across
    schemes) this is

        alpha = -d/dt log K_t (as Polchinski),  beta^2 = 2 alpha C,
        A_t = K_t/K_0,                           Sigma_t = C (1 - A_t^2),

    so dSigma/dt = -2 alpha Sigma + beta^2 holds and Gaussian data with G = C is stationary:
    A^2 C + C (1 - A^2) = C. The process tends to the free field of mass^2 m02 (the Gaussian
    fixed point). With mu2 = 0 the zero mode is frozen, as for Polchinski.
    """

    name = "renormalized_polchinski"
    default_t_min = _D["renormalized_polchinski"]["t_min"]

    def __init__(self, lattice: Lattice, T: float = _D["renormalized_polchinski"]["T"],
                 Lambda0: float = _D["renormalized_polchinski"]["Lambda0"],
                 m02: float = _D["renormalized_polchinski"]["m02"],
                 mu2: float = _D["renormalized_polchinski"]["mu2"]):
        super().__init__(lattice, T, Lambda0, m02, mu2)

    def _Sigma(self, t, p):
        return self._C(p) * -torch.expm1(2 * self._log_A(t, p))

    def _beta2(self, t, p):
        return 2 * self._alpha(t, p) * self._C(p)

