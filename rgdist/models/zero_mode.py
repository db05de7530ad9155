"""A magnetization head: the zero-mode part of the score in the zero mode's own units.

Near criticality the observables that matter most (chi, U, lambda_R) are moments of the
magnetization M = (1/V) sum_x phi_x, whose law at flow time t turns from Gaussian to
double-peaked. For p_t(M) the score along a uniform shift is (1/V) d log p_t(M)/dM per site.
Relative to the Gaussian law of spectrum S_t(0) = A_t(0)^2 G(0) + Sigma_t(0) (the
Gaussian-exact part, M ~ N(0, sigma_M^2) with sigma_M^2 = S_t(0)/V) the correction is

    h_x(phi, t) = g(z, t) / (V sigma_M),   z = M / sigma_M,   g(z, t) = f(z, t) - f(-z, t),

with f a small MLP of (z, time embedding): g is O(1) whatever the scale of M_t (it is the
derivative of log p_t(z) minus the Gaussian's), and odd in z, so the model stays Z2-odd.
:class:`ZeroModeHead` adds h to an inner score model ``net``. It is meant as the ``net`` of a
GaussianExactScore, whose remainder is residual_scale(t) * net(phi, t) with
residual_scale = (mean_p S_t)^{-1/2}; the head therefore returns net + h / residual_scale,
so that the remainder gains exactly h. Its last layer starts at zero (the wrapped model's
score at initialization is unchanged). It has no closed-form Jacobian, so exact-trace
densities and the structured Jacobian are not offered (the density code sees a generic net).
"""
from __future__ import annotations

import torch
from torch import nn

from rgdist.models.layers import Linear, ScoreModel, TimeEmbedding, check_positive_int


class ZeroModeHead(ScoreModel):
    """s = net(phi, t) + h(phi, t) / residual_scale(t) (module docstring)."""

    has_structured_jacobian = False
    has_exact_trace = False

    def __init__(self, net: ScoreModel, scheme, data_spectrum, *, t_max: float, hidden: int = 32,
                 n_freq: int = 4, generator: torch.Generator):
        super().__init__(net.lattice)
        if not isinstance(net, ScoreModel):
            raise ValueError(f"net must be a score model, got {type(net).__name__}")
        hidden = check_positive_int("hidden", hidden)
        G = torch.as_tensor(data_spectrum, dtype=torch.float64)
        if tuple(G.shape) != net.lattice.shape or not bool((G > 0).all()):
            raise ValueError(f"data_spectrum must be > 0 with shape {net.lattice.shape}")
        self.net, self.scheme = net, scheme
        self.register_buffer("data_spectrum", G.clone())
        self.embed = TimeEmbedding(t_max, hidden, n_freq, generator)
        self.fc1 = Linear(hidden + 1, hidden, True, generator)
        self.fc2 = Linear(hidden, 1, True, generator, std=0.0)
        self.to(net.param_dtype)

    def couplings(self, t):
        return self.net.couplings(t)

    def _scales(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma_M, 1/residual_scale) per time, float64, shape (B,), from one evaluation of the
        marginal spectrum S_t (residual_scale as GaussianExactScore's, (mean_p S_t)^{-1/2})."""
        G = self.data_spectrum.to(device=t.device, dtype=torch.float64)
        S = self.scheme.marginal_spectrum(t.to(torch.float64), G)
        S = S.reshape(S.shape[0], -1)
        return (S[:, 0] / S.shape[1]).sqrt(), S.mean(1).sqrt()

    def _f(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.silu(self.fc1(torch.cat([z[:, None], e], 1))))[:, 0]

    def _correction(self, phi: torch.Tensor, t: torch.Tensor, sigma_M: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, phi.dim()))
        sigma_M = sigma_M.to(phi.dtype)
        z = phi.mean(dims) / sigma_M
        e = self.embed(t)
        g = self._f(z, e) - self._f(-z, e)
        return g / (self.lattice.volume * sigma_M)

    def zero_mode_correction(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """h(phi, t) per configuration (B,): the uniform field added per site."""
        return self._correction(phi, t, self._scales(t)[0])

    def score(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma_M, inv_r = self._scales(t)
        h = self._correction(phi, t, sigma_M)
        view = (-1,) + (1,) * self.d
        return self.net(phi, t) + (h * inv_r.to(phi.dtype)).reshape(view)
