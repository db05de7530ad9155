"""Kinetic term of HMC and Fourier acceleration (its momentum sampling).

Hamiltonian (pi the conjugate momentum field, M a positive operator diagonal in momentum space)

    H(phi, pi) = 1/2 pi^T M^{-1} pi + S[phi],      pi ~ N(0, M),
    d phi/dt = M^{-1} pi,   d pi/dt = F(phi) = -dS/dphi.

* Plain HMC: M = 1.
* Fourier acceleration: M has the eigenvalues M(p) = phat^2 + fa_mass2, so
  1/2 pi^T M^{-1} pi = (1/2V) sum_p |pi~(p)|^2 / M(p), and pi = ifft(sqrt(M(p)) fft(xi)) with
  xi white. Normalization: for the free theory with fa_mass2 = m2 every mode then oscillates
  with the same angular frequency omega(p) = sqrt((phat^2 + m2)/M(p)) = 1, so a trajectory of
  length pi/2 decorrelates every free mode at once, and the leapfrog stability bound is
  step_size < 2 for all modes (plain HMC: step_size < 2/sqrt(4d + m2), set by the UV).
"""
from __future__ import annotations

import torch

from rgdist.lattice.geometry import Lattice


class Kinetic:
    """Kinetic term 1/2 pi^T M^{-1} pi, M = 1 or M(p) = phat^2 + fa_mass2 (Fourier accel.)."""

    def __init__(self, lattice: Lattice, mass: torch.Tensor | None = None):
        self.lattice = lattice
        self.mass = mass
        if mass is not None:
            self.inv_mass = 1.0 / mass
            self.sqrt_mass = mass.sqrt()

    @classmethod
    def fourier(cls, lattice: Lattice, fa_mass2: float, device, dtype) -> "Kinetic":
        return cls(lattice, lattice.phat2(device, dtype) + fa_mass2)

    def draw(self, n: int, generator: torch.Generator, device, dtype) -> torch.Tensor:
        """pi ~ N(0, M)."""
        xi = self.lattice.white_noise(n, generator, device, dtype)
        return xi if self.mass is None else self.lattice.filter(xi, self.sqrt_mass)

    def velocity(self, pi: torch.Tensor) -> torch.Tensor:
        """d phi / dt = M^{-1} pi."""
        return pi if self.mass is None else self.lattice.filter(pi, self.inv_mass)

    def energy(self, pi: torch.Tensor) -> torch.Tensor:
        """1/2 pi^T M^{-1} pi per configuration."""
        dims = tuple(range(1, pi.dim()))
        return 0.5 * (pi * self.velocity(pi)).sum(dims)

