"""The Gaussian prior p_T of the probability-flow sampler and Gaussian scores.

The terminal law p_T is the Gaussian of spectrum S_T = ``scheme.prior_spectrum(prior_G)``
(G2 units). Its exact log-density (position-space covariance C = circulant with eigenvalues
S(p); by Parseval phi^T C^-1 phi = (1/V) sum_p |phi~(p)|^2 / S(p) and log det C =
sum_p log S(p), each momentum counted once, so the pairing phi~(-p) = phi~(p)* of a real
field is automatic):

    log p(phi) = -1/(2V) sum_p |phi~(p)|^2 / S(p) - 1/2 sum_p log(2 pi S(p)).

Frozen modes (zero prior variance, Polchinski-type schemes with mu2 = 0) have no prior
density: pass ``prior_G`` (their terminal law is then the Gaussian of spectrum prior_G) or
use mu2 > 0.

:class:`GaussianScore` writes a score as scheme.gaussian_score(phi, t, G) + remainder, so
that the density code (rgdist.density.field) handles its Gaussian part in closed form.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from rgdist.lattice.geometry import Lattice
from rgdist.rg.schemes import Scheme

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gaussian_log_density(phi: torch.Tensor, spectrum: torch.Tensor,
                         lattice: Lattice) -> torch.Tensor:
    """log N(phi; 0, C) per configuration, C circulant with eigenvalues ``spectrum`` (G2 units).

    log p = -1/(2V) sum_p |phi~(p)|^2 / S(p) - 1/2 sum_p log(2 pi S(p)); shape (B,).
    """
    lattice.check_field(phi)
    S = torch.as_tensor(spectrum).to(device=phi.device, dtype=torch.float64)
    if tuple(S.shape) != lattice.shape:
        raise ValueError(f"spectrum must have shape {lattice.shape}, got {tuple(S.shape)}")
    if not bool(torch.isfinite(S).all()) or not bool((S > 0).all()):
        raise ValueError("spectrum must be finite and > 0 at every momentum (a frozen mode "
                         "has no Gaussian density: give prior_G or use an IR mass mu2 > 0)")
    power = lattice.fft(phi.to(torch.float64)).abs().square()
    quad = (power / S).sum(dim=lattice.dims) / lattice.volume
    return (-0.5 * quad - 0.5 * torch.log(2 * math.pi * S).sum()).to(phi.dtype)


def prior_spectrum(scheme: Scheme, prior_G=None, device=None) -> torch.Tensor:
    """S_T = scheme.prior_spectrum(prior_G) (float64), checked to be > 0 at every momentum."""
    G = None if prior_G is None else torch.as_tensor(prior_G, dtype=torch.float64).cpu()
    S = scheme.prior_spectrum(G).to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(S).all()) or not bool((S > 0).all()):
        raise ValueError(
            f"the prior spectrum of scheme {scheme.name!r} vanishes on some mode (a frozen zero "
            "mode): pass prior_G (the data spectrum) so the terminal law has a density, or use "
            "mu2 > 0")
    return S


def prior_log_density(scheme: Scheme, phi_T: torch.Tensor, prior_G=None) -> torch.Tensor:
    """log p_T(phi_T) under the Gaussian prior of spectrum scheme.prior_spectrum(prior_G)."""
    return gaussian_log_density(phi_T, prior_spectrum(scheme, prior_G, phi_T.device),
                                scheme.lattice)


class GaussianScore:
    """s(phi, t) = scheme.gaussian_score(phi, t, G) + remainder(phi, t)  (remainder None = 0).

    Written this way, the Gaussian part of the flow is handled in closed form by the
    density code (see :class:`rgdist.density.field.FlowField`); only ``remainder`` is
    differentiated. Callable like any score function, so rgdist.sample.solve can run it too.
    """

    def __init__(self, scheme: Scheme, G, remainder: ScoreFn | None = None,
                 remainder_jacobian: Callable | None = None):
        if not isinstance(scheme, Scheme):
            raise ValueError(f"scheme must be a rgdist.rg.Scheme, got {type(scheme).__name__}")
        G = torch.as_tensor(G, dtype=torch.float64)
        if tuple(G.shape) != scheme.lattice.shape or not bool((G >= 0).all()):
            raise ValueError(f"G must be a non-negative spectrum of shape {scheme.lattice.shape}")
        if remainder is not None and not callable(remainder):
            raise ValueError("remainder must be a callable (phi, t) -> tensor or None")
        if remainder_jacobian is not None and (remainder is None or not callable(remainder_jacobian)):
            raise ValueError("remainder_jacobian must be a callable (phi, t) -> (kernel, diag) "
                             "and needs a remainder")
        self.scheme, self.G, self.remainder = scheme, G, remainder
        self.remainder_jacobian = remainder_jacobian

    def __call__(self, phi: torch.Tensor, t) -> torch.Tensor:
        s = self.scheme.gaussian_score(phi, t, self.G.to(phi.device))
        if self.remainder is not None:
            s = s + self.remainder(phi, t).to(phi.dtype)
        return s


def same_scheme(a, b) -> bool:
    """Equal schemes: the same object, or the same class, lattice and parameters."""
    if a is b:
        return True
    return (isinstance(a, Scheme) and type(a) is type(b) and a.lattice == b.lattice
            and a.params() == b.params())
