"""Small building blocks of the baseline vector field, initialized from an explicit
torch.Generator so that a model is a pure function of its seed.

* :class:`Dense`: y = x W^T + b with W ~ N(0, std^2), std = 1/sqrt(n_in) unless given
  (std = 0 gives the zero map: the time-output layers start at 0, so the untrained field
  vanishes), b = 0.
* :class:`TauEmbedding`: e(tau) = SiLU(W2 SiLU(W1 f(tau) + b1) + b2) on the features
  f(tau) = [tau, sin(pi k tau), cos(pi k tau)]_{k = 1..n_freq}.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Dense", "TauEmbedding", "normal_init"]


def normal_init(shape, std: float, generator: torch.Generator) -> torch.Tensor:
    """float64 draws of N(0, std^2) from ``generator``."""
    return torch.randn(shape, generator=generator, dtype=torch.float64) * std


class Dense(nn.Module):
    """Affine map with explicit-generator initialization (see the module docstring)."""

    def __init__(self, n_in: int, n_out: int, generator: torch.Generator, *, bias: bool = True,
                 std: float | None = None):
        super().__init__()
        s = 1.0 / math.sqrt(n_in) if std is None else std
        self.weight = nn.Parameter(normal_init((n_out, n_in), s, generator))
        self.bias = nn.Parameter(torch.zeros(n_out, dtype=torch.float64)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class TauEmbedding(nn.Module):
    """Flow-time embedding e(tau), shape (B, hidden) for tau of shape (B,)."""

    def __init__(self, hidden: int, n_freq: int, generator: torch.Generator):
        super().__init__()
        self.n_freq = n_freq
        self.fc1 = Dense(1 + 2 * n_freq, hidden, generator)
        self.fc2 = Dense(hidden, hidden, generator)

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        k = math.pi * torch.arange(1, self.n_freq + 1, dtype=tau.dtype, device=tau.device)
        a = tau[:, None] * k
        feats = torch.cat([tau[:, None], a.sin(), a.cos()], dim=1)
        return F.silu(self.fc2(F.silu(self.fc1(feats))))
