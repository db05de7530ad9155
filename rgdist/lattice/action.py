"""Lattice phi^4 action in the standard and hopping parametrizations (SPEC section 1).

Standard:  S[phi] = sum_x [ 1/2 sum_mu (phi_{x+mu} - phi_x)^2 + 1/2 m2 phi_x^2 + lam/4 phi_x^4 ]
Hopping:   S[phi] = sum_x [ -2 kappa sum_mu phi_x phi_{x+mu} + (1 - 2 lam_h) phi_x^2 + lam_h phi_x^4 ]
with phi_std = sqrt(2 kappa) phi_hop, m2 = (1 - 2 lam_h)/kappa - 2d, lam = lam_h / kappa^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value}")
    return value


def check_couplings(m2, lam) -> tuple[float, float]:
    """Validate (m2, lam): the action must be bounded below and normalizable."""
    m2 = _finite("m2", m2)
    lam = _finite("lam", lam)
    if lam < 0:
        raise ValueError(f"lam must be >= 0 (the action is unbounded below for lam < 0), got {lam}")
    if lam == 0 and m2 <= 0:
        raise ValueError(
            f"with lam = 0 the action is bounded only for m2 > 0, got m2 = {m2} "
            "(use lam > 0 for m2 <= 0)"
        )
    return m2, lam


def hopping_to_standard(kappa, lam_h, d: int) -> tuple[float, float]:
    """(kappa, lam_h) -> (m2, lam). The field scales as phi_std = sqrt(2 kappa) phi_hop."""
    kappa = _finite("kappa", kappa)
    lam_h = _finite("lam_h", lam_h)
    if kappa <= 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    if lam_h < 0:
        raise ValueError(f"lam_h must be >= 0, got {lam_h}")
    return (1 - 2 * lam_h) / kappa - 2 * d, lam_h / kappa**2


def standard_to_hopping(m2, lam, d: int) -> tuple[float, float]:
    """(m2, lam) -> (kappa, lam_h), the inverse of :func:`hopping_to_standard`.

    kappa solves 2 lam kappa^2 + (m2 + 2d) kappa - 1 = 0 (the positive root).
    """
    m2 = _finite("m2", m2)
    lam = _finite("lam", lam)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    b = m2 + 2 * d
    if lam == 0:
        if b <= 0:
            raise ValueError(f"m2 + 2d must be > 0 at lam = 0, got m2 = {m2}")
        kappa = 1.0 / b
    else:
        # numerically stable positive root of 2 lam k^2 + b k - 1 = 0
        disc = math.sqrt(b * b + 8 * lam)
        kappa = 2.0 / (b + disc) if b >= 0 else (disc - b) / (4 * lam)
    return kappa, lam * kappa**2


def laplacian(phi: torch.Tensor, d: int) -> torch.Tensor:
    """Lattice Laplacian sum_mu (phi_{x+mu} + phi_{x-mu} - 2 phi_x) over the last d axes."""
    out = -2 * d * phi
    for ax in range(-d, 0):
        out = out + torch.roll(phi, 1, ax) + torch.roll(phi, -1, ax)
    return out


@dataclass(frozen=True)
class Phi4Action:
    """S[phi] of a batch of fields with shape (batch, *lattice_shape) in d dimensions."""

    m2: float
    lam: float
    d: int = 2

    def __post_init__(self):
        m2, lam = check_couplings(self.m2, self.lam)
        object.__setattr__(self, "m2", m2)
        object.__setattr__(self, "lam", lam)
        if isinstance(self.d, bool) or not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"d must be an integer >= 1, got {self.d!r}")

    @classmethod
    def from_hopping(cls, kappa, lam_h, d: int = 2) -> "Phi4Action":
        m2, lam = hopping_to_standard(kappa, lam_h, d)
        return cls(m2, lam, d)

    def to_hopping(self) -> tuple[float, float]:
        return standard_to_hopping(self.m2, self.lam, self.d)

    def _check(self, phi: torch.Tensor) -> None:
        if not isinstance(phi, torch.Tensor) or phi.dim() != self.d + 1:
            shape = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ValueError(f"phi must have shape (batch, N_1..N_{self.d}), got {shape}")

    def potential(self, phi: torch.Tensor) -> torch.Tensor:
        """Site-local part 1/2 m2 phi^2 + lam/4 phi^4, summed per configuration."""
        dims = tuple(range(1, phi.dim()))
        phi2 = phi * phi
        return (0.5 * self.m2 * phi2 + 0.25 * self.lam * phi2 * phi2).sum(dims)

    def kinetic(self, phi: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, phi.dim()))
        out = torch.zeros(phi.shape[0], dtype=phi.dtype, device=phi.device)
        for ax in range(1, phi.dim()):
            out = out + 0.5 * ((torch.roll(phi, -1, ax) - phi) ** 2).sum(dims)
        return out

    def __call__(self, phi: torch.Tensor) -> torch.Tensor:
        """S[phi] per configuration, shape (batch,)."""
        self._check(phi)
        return self.kinetic(phi) + self.potential(phi)

    action = __call__

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """-dS/dphi in closed form: Laplacian(phi) - m2 phi - lam phi^3."""
        self._check(phi)
        return laplacian(phi, self.d) - self.m2 * phi - self.lam * phi * phi * phi
