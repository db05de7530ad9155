"""Periodic hypercubic lattice geometry and Fourier conventions (SPEC section 2).

phi~(p) = sum_x exp(-i p.x) phi_x  (unnormalized ``torch.fft.fftn`` over the lattice axes),
p_mu = 2 pi n_mu / N_mu, phat_mu = 2 sin(p_mu / 2).  Fields have shape ``(batch, *shape)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from rgdist.checks import check_positive_int as _check_int


class Lattice:
    """A periodic lattice with ``shape = (N_1, ..., N_d)`` sites (lattice units, a = 1)."""

    def __init__(self, shape: Sequence[int] | int, d: int | None = None):
        if isinstance(shape, int) or hasattr(shape, "__index__") and not isinstance(shape, (list, tuple)):
            if d is None:
                d = 2
            d = _check_int("d", d, 1)
            shape = (int(shape),) * d
        shape = tuple(shape)
        if len(shape) < 1:
            raise ValueError("lattice shape must have at least one axis")
        self.shape = tuple(_check_int(f"N[{i}]", n, 2) for i, n in enumerate(shape))
        if d is not None and len(self.shape) != d:
            raise ValueError(f"d={d} does not match shape {self.shape}")

    @property
    def d(self) -> int:
        return len(self.shape)

    @property
    def volume(self) -> int:
        return math.prod(self.shape)

    @property
    def dims(self) -> tuple[int, ...]:
        """The tensor axes of the lattice in a batched field ``(batch, *shape)``."""
        return tuple(range(-self.d, 0))

    def __repr__(self) -> str:
        return f"Lattice(shape={self.shape})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Lattice) and other.shape == self.shape

    def __hash__(self) -> int:
        return hash(self.shape)

    # --- momenta -----------------------------------------------------------------
    def momenta(self, device=None, dtype=torch.float64) -> list[torch.Tensor]:
        """p_mu on the full lattice, each broadcast to ``shape``."""
        axes = [2 * math.pi * torch.arange(n, device=device, dtype=dtype) / n for n in self.shape]
        return list(torch.meshgrid(*axes, indexing="ij"))

    def phat2(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """phat^2 = sum_mu 4 sin^2(p_mu / 2), shape ``shape``."""
        out = torch.zeros(self.shape, device=device, dtype=dtype)
        for p in self.momenta(device, dtype):
            out = out + 4 * torch.sin(p / 2) ** 2
        return out

    def free_propagator(self, m2: float, device=None, dtype=torch.float64) -> torch.Tensor:
        """G2(p) = 1/(phat^2 + m^2), i.e. <|phi~(p)|^2>/V of the free theory."""
        if not math.isfinite(m2) or m2 <= 0:
            raise ValueError(f"m2 must be finite and > 0 for the free propagator, got {m2}")
        return 1.0 / (self.phat2(device, dtype) + m2)

    def lowest_momentum_indices(self) -> list[tuple[int, ...]]:
        """Indices of p_1 = (2 pi / N, 0, ...) and its d-1 rotations."""
        out = []
        for mu in range(self.d):
            idx = [0] * self.d
            idx[mu] = 1
            out.append(tuple(idx))
        return out

    # --- fields ------------------------------------------------------------------
    def check_field(self, phi: torch.Tensor, name: str = "phi") -> torch.Tensor:
        """Validate a batched field of shape ``(batch, *shape)``."""
        if not isinstance(phi, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(phi).__name__}")
        if phi.dim() != self.d + 1 or tuple(phi.shape[1:]) != self.shape:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, self.shape))}), "
                f"got {tuple(phi.shape)}"
            )
        return phi

    def fft(self, phi: torch.Tensor) -> torch.Tensor:
        return torch.fft.fftn(phi, dim=self.dims)

    def ifft(self, phi_p: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifftn(phi_p, dim=self.dims).real

    def white_noise(self, batch: int, generator: torch.Generator | None = None,
                    device=None, dtype=torch.float64) -> torch.Tensor:
        return torch.randn((batch, *self.shape), generator=generator, device=device, dtype=dtype)

    def colored_noise(self, spectrum: torch.Tensor, batch: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Real Gaussian field with <|phi~(p)|^2> = V * spectrum(p).

        ``spectrum`` is in G2 units (per unit volume); white unit noise has spectrum 1.
        It must be symmetric under p -> -p, which every function of phat^2 is.
        """
        white = self.white_noise(batch, generator, spectrum.device, spectrum.dtype)
        return self.filter(white, spectrum.clamp_min(0).sqrt())

    def filter(self, phi: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Multiply mode by mode in momentum space by a real, p -> -p symmetric ``kernel``."""
        return self.ifft(self.fft(phi) * kernel)
