"""TraceScore: a score model whose Jacobian trace is exact and costs O(V K) (SPEC section 9).

    s(phi, t) = -ifft( h_t(p) phi~(p) )  +  sum_k w_k * sigma_k( u_k * phi ; t )

* The linear part is a learned, time-dependent, p -> -p symmetric filter
      h_t(p) = h_ref,t(p) exp( sum_j a_j(t) b_j(p) ),   h_ref,t = 1 / (A_t^2 G_ref + Sigma_t),
  with b_j small functions of the lattice momenta (of phat^2, sum_mu phat_mu^4 and
  1/(1 + phat^2), so it is defined on every lattice size) and a_j(t) linear in the time embedding, starting at 0.
  G_ref is a REFERENCE spectrum: by default white noise (G_ref = 1), i.e. no knowledge of the
  target; the model starts from the exact score of white-noise data and learns the rest.
* The nonlinear part has K channels with periodic convolutions u_k, w_k (position-space
  stencils of radius ``radius``, or the whole lattice with ``radius = None``), plus
  ``global_channels`` channels with u = (scale / V) * 1 (they see the magnetization M), and
  odd pointwise functions sigma_k(a; t) = c1_k(t) tanh(a) + c3_k(t) (a - tanh a) whose
  coefficients are linear in the time embedding and start at 0 (a - tanh a ~ a^3/3 near 0, the
  phi^4 shape, but grows only linearly, so the flow stays Lipschitz and explicit RK4 steps
  stay stable; a plain a^3 made reverse-KL training diverge at lam = 1). Convolutions: (u * phi)_x =
  sum_z u(z) phi_{x - z} (periodic), done with FFTs.

Every term is odd in phi and translation equivariant. The Jacobian of channel k is
W_k diag(sigma_k') U_k (W, U the circulant convolution matrices), so for any circulant
filter M (eigenvalues m(p), real and even) the weighted trace is exact:

    tr(M ds/dphi) = -sum_p m(p) h_t(p)  +  sum_k c_k(m) sum_y sigma_k'((u_k * phi)_y),
    c_k(m) = (1/V) sum_p m(p) Re[u~_k(p) w~_k(p)]      (= sum_z w_k(z) u_k(-z) for m = 1),

because tr(M W D U) = tr(D U M W) and U M W is circulant with constant diagonal c_k(m).
:meth:`TraceScore.divergence` returns the score and this trace; no vector-Jacobian product.
:meth:`linear_filter` and :meth:`nonlinear_divergence` give the two parts separately, for
integrators that solve the linear part exactly (rgdist.density, integrator "split").
"""
from __future__ import annotations

import math

import torch
from torch import nn

from rgdist.lattice.geometry import Lattice
from rgdist.models.layers import (
    Linear,
    ScoreModel,
    TimeEmbedding,
    as_time,
    check_dtype,
    check_positive_int,
    init_generator,
    normal_,
)


class TraceScore(ScoreModel):
    """Exact-divergence score model (see the module docstring)."""

    has_exact_trace = True

    def __init__(self, lattice: Lattice, *, scheme=None, channels: int = 8,
                 global_channels: int = 2, radius: int | None = 1, filter_rank: int = 8,
                 filter_hidden: int = 16, hidden: int = 32, n_freq: int = 4,
                 t_max: float = 1.0, reference_spectrum=None, dtype="float64",
                 init_seed: int = 0, generator: torch.Generator | None = None):
        super().__init__(lattice)
        if scheme is None or not callable(getattr(scheme, "marginal_spectrum", None)):
            raise ValueError("TraceScore needs scheme= (a rgdist.rg.Scheme): its linear part "
                             "is relative to the scheme's Gaussian reference score")
        if scheme.lattice != lattice:
            raise ValueError(f"scheme lattice {scheme.lattice} differs from the model's {lattice}")
        self.channels = check_positive_int("channels", channels, 0)
        self.global_channels = check_positive_int("global_channels", global_channels, 0)
        if radius is not None:
            radius = check_positive_int("radius", radius, 0)
        self.radius = radius
        self.filter_rank = check_positive_int("filter_rank", filter_rank)
        filter_hidden = check_positive_int("filter_hidden", filter_hidden)
        hidden = check_positive_int("hidden", hidden)
        n_freq = check_positive_int("n_freq", n_freq, 0)
        init_seed = check_positive_int("init_seed", init_seed, 0)
        self.scheme = scheme
        g = init_generator(init_seed, generator)
        d = lattice.d
        self.embed = TimeEmbedding(t_max, hidden, n_freq, g)
        # linear part: separable low-rank log-correction of the reference filter
        self.filter_in = Linear(3, filter_hidden, True, g)
        self.filter_out = Linear(filter_hidden, self.filter_rank, False, g)
        self.filter_time = Linear(hidden, self.filter_rank, True, g, std=0.0)
        # nonlinear channels
        K = self.channels
        side = self._side()
        self.u = nn.Parameter(torch.empty(K, *(side,) * d, dtype=torch.float64))
        self.w = nn.Parameter(torch.empty(K, *(side,) * d, dtype=torch.float64))
        normal_(self.u, 1.0 / math.sqrt(side**d), g)
        normal_(self.w, 1.0 / math.sqrt(side**d), g)
        Gc = self.global_channels
        self.u_global = nn.Parameter(torch.ones(Gc, dtype=torch.float64))
        self.w_global = nn.Parameter(torch.empty(Gc, *(side,) * d, dtype=torch.float64))
        normal_(self.w_global, 1.0 / math.sqrt(side**d), g)
        self.coef = Linear(hidden, 2 * (K + Gc), True, g, std=0.0)
        if reference_spectrum is None:
            ref = torch.ones(lattice.shape, dtype=torch.float64)
        else:
            ref = torch.as_tensor(reference_spectrum, dtype=torch.float64)
            if tuple(ref.shape) != lattice.shape or not bool((ref > 0).all()):
                raise ValueError(f"reference_spectrum must be > 0 with shape {lattice.shape}")
        self.register_buffer("reference", ref)
        self.to(check_dtype(dtype))

    # ------------------------------------------------------------------ pieces
    def _side(self) -> int:
        if self.radius is None:
            return max(self.lattice.shape)
        return 2 * self.radius + 1

    def _offsets(self, device) -> torch.Tensor:
        """Flat lattice index of each stencil offset z (periodic), shape (side^d,)."""
        side, shape = self._side(), self.lattice.shape
        if self.radius is None:
            axes = [torch.arange(side, device=device) for _ in shape]
        else:
            axes = [torch.arange(-self.radius, self.radius + 1, device=device) for _ in shape]
        grids = torch.meshgrid(*axes, indexing="ij")
        flat = torch.zeros_like(grids[0])
        for ax, n in enumerate(shape):
            flat = flat * n + grids[ax] % n
        return flat.reshape(-1)

    def _kernel_fft(self, stencil: torch.Tensor) -> torch.Tensor:
        """Fourier transform (K, *shape) of stencils (K, side, ..., side) placed periodically
        (offsets that wrap around a small lattice add up)."""
        K, V = stencil.shape[0], self.lattice.volume
        flat = torch.zeros(K, V, dtype=stencil.dtype, device=stencil.device)
        flat = flat.index_add(1, self._offsets(stencil.device), stencil.reshape(K, -1))
        return self.lattice.fft(flat.reshape(K, *self.lattice.shape))

    def _momentum_features(self, device, dtype) -> torch.Tensor:
        lat = self.lattice
        moms = lat.momenta(device, dtype)
        p2 = sum(4 * torch.sin(p / 2) ** 2 for p in moms)
        p4 = sum((4 * torch.sin(p / 2) ** 2) ** 2 for p in moms)
        # phat^2 and sum_mu phat_mu^4 (UV shape), 1/(1 + phat^2) (resolves the IR modes)
        return torch.stack([p2 / (4 * lat.d), p4 / (16 * lat.d), 1 / (1 + p2)], -1)

    def filter(self, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h_t(p), shape (B, *shape)."""
        feats = self._momentum_features(t.device, emb.dtype)
        b = self.filter_out(torch.tanh(self.filter_in(feats)))          # (*shape, J)
        a = self.filter_time(emb)                                       # (B, J)
        log_corr = torch.einsum("bj,...j->b...", a, b)
        P = self.scheme.marginal_spectrum(t.to(torch.float64), self.reference.to(t.device))
        h_ref = (1.0 / P.clamp_min(torch.finfo(torch.float64).tiny)).to(emb.dtype)
        return h_ref * torch.exp(log_corr)

    def _channels(self, dtype):
        """(u~, w~): (K + G, *shape) complex Fourier kernels of all channels."""
        lat = self.lattice
        parts_u, parts_w = [], []
        if self.channels:
            parts_u.append(self._kernel_fft(self.u))
            parts_w.append(self._kernel_fft(self.w))
        if self.global_channels:
            zero = torch.zeros(lat.shape, dtype=self.u_global.dtype, device=self.u_global.device)
            zero.view(-1)[0] = 1.0
            parts_u.append(self.u_global.reshape(-1, *([1] * lat.d)) * zero.to(torch.complex128
                           if self.u_global.dtype == torch.float64 else torch.complex64))
            parts_w.append(self._kernel_fft(self.w_global))
        if not parts_u:
            return None, None
        return torch.cat(parts_u), torch.cat(parts_w)

    def _nonlinear_parts(self, phi: torch.Tensor, emb: torch.Tensor, X: torch.Tensor):
        """Fourier transform of the channels' sum and what their trace needs (or None)."""
        d = self.d
        u_hat, w_hat = self._channels(phi.dtype)
        if u_hat is None:
            return None, None
        lat = self.lattice
        a = lat.ifft(X.unsqueeze(1) * u_hat.unsqueeze(0))              # (B, C, *shape)
        c = self.coef(emb)
        C = u_hat.shape[0]
        view = (-1, C) + (1,) * d
        c1, c3 = c[:, :C].reshape(view), c[:, C:].reshape(view)
        th = torch.tanh(a)
        out_hat = (w_hat.unsqueeze(0) * lat.fft(c1 * th + c3 * (a - th))).sum(1)
        return out_hat, {"uw": (u_hat * w_hat).real, "a": a, "th": th, "c1": c1, "c3": c3}

    def _channel_trace(self, cache, m) -> torch.Tensor:
        dims = tuple(range(1, self.d + 1))
        ck = (m * cache["uw"]).sum(dims) / self.lattice.volume           # (C,)
        th2 = cache["th"] ** 2
        dsig = cache["c1"] * (1 - th2) + cache["c3"] * th2
        return (ck.unsqueeze(0) * dsig.sum(tuple(range(2, self.d + 2)))).sum(1)

    def score(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        X = self.lattice.fft(phi)
        out_hat = -self.filter(t, emb) * X
        nl, _ = self._nonlinear_parts(phi, emb, X)
        if nl is not None:
            out_hat = out_hat + nl
        return self.lattice.ifft(out_hat)

    def _prepare(self, phi, t, m):
        self.lattice.check_field(phi)
        t = as_time(t, phi.shape[0], phi)
        dtype = self.param_dtype
        if m is None:
            m = torch.ones(self.lattice.shape, dtype=dtype, device=phi.device)
        return phi.to(dtype), t.to(dtype), torch.as_tensor(m).to(device=phi.device, dtype=dtype)

    # ------------------------------------------------------------------ exact trace
    def divergence(self, phi: torch.Tensor, t, m=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(phi, t), tr(M ds/dphi)) per configuration; M the circulant filter with
        eigenvalues ``m`` (lattice.shape; None = identity, i.e. the plain divergence)."""
        x, tt, m = self._prepare(phi, t, m)
        emb = self.embed(tt)
        X = self.lattice.fft(x)
        h = self.filter(tt, emb)
        out_hat = -h * X
        tr = -(m * h).sum(tuple(range(1, self.d + 1)))
        nl, cache = self._nonlinear_parts(x, emb, X)
        if nl is not None:
            out_hat = out_hat + nl
            tr = tr + self._channel_trace(cache, m)
        return self.lattice.ifft(out_hat).to(phi.dtype), tr.to(phi.dtype)

    # ------------------------------------------------------------------ split form
    def linear_filter(self, t) -> torch.Tensor:
        """h_t(p) of the linear part s_lin = -ifft(h_t phi~), shape (B, *shape) for t (B,)."""
        ref = next(self.parameters())
        t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device).reshape(-1)
        return self.filter(t, self.embed(t))

    def nonlinear_divergence(self, phi: torch.Tensor, t, m=None):
        """(n(phi, t), tr(M dn/dphi)) of the nonlinear channels n = s - s_lin alone (zeros
        without channels)."""
        x, tt, m = self._prepare(phi, t, m)
        emb = self.embed(tt)
        nl, cache = self._nonlinear_parts(x, emb, self.lattice.fft(x))
        if nl is None:
            z = torch.zeros_like(phi)
            return z, z.flatten(1).sum(1)
        return (self.lattice.ifft(nl).to(phi.dtype),
                self._channel_trace(cache, m).to(phi.dtype))
