"""The baseline's vector field: translation equivariant, Z2 odd, with an exact O(V K)
divergence (the free-vector-field analogue of rgdist.models.tracenet.TraceScore: no
reference spectrum, no scheme inside).

    v(phi, tau) = ifft( g_tau(p) phi~(p) )                         (linear part)
                + sum_k w_k * sigma_k( u_k * phi ; tau )            (K local channels)
                + sum_g W_g sigma_g( s_g M ; tau ) 1                 (G global channels)

* g_tau(p) = sum_j a_j(tau) b_j(p), J = ``filter_rank``: b = Dense(tanh(Dense(f(p)))) of the
  features f(p) = (phat^2 / 4d, sum_mu phat_mu^4 / 16d, 1 / (1 + phat^2)), which are invariant
  under p -> -p and the hypercubic group and exist on every lattice size; a(tau) is a Dense
  map of the time embedding that starts at 0.
* Local channels: periodic convolutions (u * phi)_x = sum_z u(z) phi_{x - z} with stencils of
  radius ``radius`` (``None``: the whole lattice); done directly when the stencil fits in the
  lattice (torch's conv1d/2d/3d on a periodic halo for d <= 3, sums of shifted copies above),
  through FFTs otherwise (the same circular convolution).
* Global channels: functions of the magnetization M = mean_x phi_x, added to every site.
* sigma(a; tau) = c1(tau) tanh(a) + c3(tau) (a - tanh a): odd, ~ c1 a + (c3 - c1) a^3 / 3
  near 0, Lipschitz (explicit RK4 stays stable); c1, c3 linear in the time embedding and 0 at
  initialization, so the untrained field is v = 0.

Every term is odd in phi and commutes with translations, so v(T phi) = T v(phi),
v(-phi) = -v(phi), and div v is translation invariant and even.

Exact divergence. The Jacobian of local channel k is W_k diag(sigma_k'(a_k)) U_k with
circulant U_k, W_k; its trace is sum_y sigma_k'(a_{k,y}) [W_k U_k]_{yy} and the diagonal of a
circulant is constant:

    [W_k U_k]_{yy} = c_k = sum_z w_k(z) u_k(-z) = (1/V) sum_p Re(u~_k(p) w~_k(p)),
    sum_y sigma'(a_y) = V c1 + (c3 - c1) sum_y tanh^2(a_y).

A global channel has Jacobian W_g s_g sigma_g'(s_g M) (1/V) 1 1^T, trace W_g s_g sigma_g';
the linear part has trace sum_p g_tau(p). Total cost O(V K), no vector-Jacobian product.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rgdist.flow.baseline.checks import check_pos_int, torch_dtype
from rgdist.flow.baseline.layers import Dense, TauEmbedding, normal_init
from rgdist.lattice import Lattice

__all__ = ["BaselineField"]

#: library convolutions of the stencil channels by lattice dimension (measured 1.36x faster
#: per training step than the sums of shifted copies at N = 32, d = 2); other d: shifted copies
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class BaselineField(nn.Module):
    """Equivariant, Z2-odd vector field v(phi, tau) with exact divergence (module docstring).

    Args:
        lattice: the rgdist Lattice.
        channels: K local channels; radius: their stencil radius (None: whole lattice);
        global_channels: G channels fed by the magnetization.
        filter_rank, filter_hidden: rank J and width of the momentum filter g_tau(p).
        hidden, n_freq: width and number of Fourier frequencies of the tau embedding.
        dtype: "float64" (default) or "float32".
        init_seed / generator: parameter initialization (a given generator wins).
    """

    has_exact_trace = True

    def __init__(self, lattice: Lattice, *, channels: int = 8, global_channels: int = 2,
                 radius: int | None = 1, filter_rank: int = 8, filter_hidden: int = 16,
                 hidden: int = 32, n_freq: int = 4, dtype="float64", init_seed: int = 0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a rgdist Lattice, got {type(lattice).__name__}")
        self.lattice = lattice
        self.channels = check_pos_int("channels", channels, 0)
        self.global_channels = check_pos_int("global_channels", global_channels, 0)
        self.radius = None if radius is None else check_pos_int("radius", radius, 0)
        self.filter_rank = check_pos_int("filter_rank", filter_rank)
        filter_hidden = check_pos_int("filter_hidden", filter_hidden)
        hidden = check_pos_int("hidden", hidden)
        n_freq = check_pos_int("n_freq", n_freq, 0)
        if generator is None:
            generator = torch.Generator().manual_seed(check_pos_int("init_seed", init_seed, 0))
        elif not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got "
                             f"{type(generator).__name__}")
        g = generator
        # parameter creation order is part of the seed -> model map: keep it
        self.embed = TauEmbedding(hidden, n_freq, g)
        self.filter_in = Dense(3, filter_hidden, g)
        self.filter_out = Dense(filter_hidden, self.filter_rank, g, bias=False)
        self.filter_time = Dense(hidden, self.filter_rank, g, std=0.0)
        side, d = self._side(), lattice.d
        K, G = self.channels, self.global_channels
        self.u = nn.Parameter(normal_init((K,) + (side,) * d, 1.0 / math.sqrt(side ** d), g))
        self.w = nn.Parameter(normal_init((K,) + (side,) * d, 1.0 / math.sqrt(side ** d), g))
        self.s_global = nn.Parameter(torch.ones(G, dtype=torch.float64))
        self.w_global = nn.Parameter(normal_init((G,), 1.0, g))
        self.coef = Dense(hidden, 2 * (K + G), g, std=0.0)
        self.register_buffer("offsets", self._offsets(), persistent=False)
        self.stencil = self._stencil_offsets()
        self.to(torch_dtype(dtype))

    # ------------------------------------------------------------------ geometry
    def _side(self) -> int:
        return max(self.lattice.shape) if self.radius is None else 2 * self.radius + 1

    def _offsets(self) -> torch.Tensor:
        """Flat periodic lattice index of every stencil offset z, shape (side^d,)."""
        side = self._side()
        if self.radius is None:
            axes = [torch.arange(side) for _ in self.lattice.shape]
        else:
            axes = [torch.arange(-self.radius, self.radius + 1) for _ in self.lattice.shape]
        grids = torch.meshgrid(*axes, indexing="ij")
        flat = torch.zeros_like(grids[0])
        for ax, n in enumerate(self.lattice.shape):
            flat = flat * n + grids[ax] % n
        return flat.reshape(-1)

    def _stencil_offsets(self) -> tuple[tuple[int, ...], ...]:
        """The offsets z of a radius-r stencil, in the order of the flattened stencil."""
        if self.radius is None:
            return ()
        r, d = self.radius, self.lattice.d
        grids = torch.meshgrid(*[torch.arange(-r, r + 1)] * d, indexing="ij")
        flat = [g.reshape(-1).tolist() for g in grids]
        return tuple(zip(*flat))

    def _placed(self, stencil: torch.Tensor) -> torch.Tensor:
        """Stencils (K, side, .., side) placed on the periodic lattice, (K, *shape); offsets
        that wrap around a lattice smaller than the stencil add up."""
        K, V = stencil.shape[0], self.lattice.volume
        flat = torch.zeros(K, V, dtype=stencil.dtype, device=stencil.device)
        flat = flat.index_add(1, self.offsets.to(stencil.device), stencil.reshape(K, -1))
        return flat.reshape(K, *self.lattice.shape)

    def _direct(self) -> bool:
        """Shifted copies when the stencil fits in the lattice, FFTs otherwise."""
        return self.radius is not None and self._side() <= min(self.lattice.shape)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Periodic halo of width ``radius`` on the last d axes."""
        r, d = self.radius, self.lattice.d
        if r == 0:
            return x
        for ax in range(x.dim() - d, x.dim()):
            n = x.shape[ax]
            x = torch.cat([x.narrow(ax, n - r, r), x, x.narrow(ax, 0, r)], dim=ax)
        return x

    def _shifted(self, xp: torch.Tensor, z: tuple[int, ...]) -> torch.Tensor:
        """y -> x_{y - z}, read from the padded ``xp`` (last d axes)."""
        d, r = self.lattice.d, self.radius
        out = xp
        for i, (zi, n) in enumerate(zip(z, self.lattice.shape)):
            out = out.narrow(xp.dim() - d + i, r - zi, n)
        return out

    def _conv_in(self, x: torch.Tensor) -> torch.Tensor:
        """a_k = (u_k * x)_y = sum_z u_k(z) x_{y - z}: (B, *shape) -> (B, K, *shape)."""
        conv = _CONV.get(self.lattice.d)
        if conv is not None:  # one library convolution (cross-correlation: flipped stencil)
            sites = tuple(range(1, self.lattice.d + 1))
            return conv(self._pad(x.unsqueeze(1)), torch.flip(self.u, sites).unsqueeze(1))
        xp = self._pad(x)
        stack = torch.stack([self._shifted(xp, z) for z in self.stencil], 1)
        return torch.einsum("bz...,kz->bk...", stack, self.u.reshape(self.channels, -1))

    def _conv_out(self, s: torch.Tensor) -> torch.Tensor:
        """sum_k (w_k * s_k)_y = sum_z t_z(y - z) with t_z = sum_k w_k(z) s_k:
        (B, K, *shape) -> (B, *shape)."""
        conv = _CONV.get(self.lattice.d)
        if conv is not None:
            sites = tuple(range(1, self.lattice.d + 1))
            return conv(self._pad(s), torch.flip(self.w, sites).unsqueeze(0))[:, 0]
        t = torch.einsum("bk...,kz->bz...", s, self.w.reshape(self.channels, -1))
        tp = self._pad(t)
        out = None
        for i, z in enumerate(self.stencil):
            term = self._shifted(tp[:, i], z)
            out = term if out is None else out + term
        return out

    # ------------------------------------------------------------------ time dependence
    @property
    def param_dtype(self) -> torch.dtype:
        return self.filter_time.weight.dtype

    def _features(self, device, dtype) -> torch.Tensor:
        lat = self.lattice
        ph = [4 * torch.sin(p / 2) ** 2 for p in lat.momenta(device, dtype)]
        p2, p4 = sum(ph), sum(x * x for x in ph)
        return torch.stack([p2 / (4 * lat.d), p4 / (16 * lat.d), 1 / (1 + p2)], -1)

    def _filter(self, emb: torch.Tensor) -> torch.Tensor:
        b = self.filter_out(torch.tanh(self.filter_in(self._features(emb.device, emb.dtype))))
        return torch.einsum("bj,...j->b...", self.filter_time(emb), b)

    def linear_filter(self, tau) -> torch.Tensor:
        """g_tau(p) of the linear part, shape (B, *shape) for tau of shape (B,)."""
        ref = self.filter_time.weight
        tau = torch.as_tensor(tau, dtype=ref.dtype, device=ref.device).reshape(-1)
        return self._filter(self.embed(tau))

    def _tau(self, tau, phi: torch.Tensor) -> torch.Tensor:
        tau = torch.as_tensor(tau, dtype=phi.dtype, device=phi.device)
        if tau.dim() == 0:
            return tau.expand(phi.shape[0])
        if tuple(tau.shape) != (phi.shape[0],):
            raise ValueError(f"tau must be a scalar or have shape ({phi.shape[0]},), "
                             f"got {tuple(tau.shape)}")
        return tau

    # ------------------------------------------------------------------ evaluation
    def divergence(self, phi: torch.Tensor, tau) -> tuple[torch.Tensor, torch.Tensor]:
        """(v(phi, tau), div v): shapes (B, *shape) and (B,), in phi's dtype."""
        lat = self.lattice
        lat.check_field(phi)
        x = phi.to(self.param_dtype)
        emb = self.embed(self._tau(tau, x))
        d, V = lat.d, lat.volume
        sites = tuple(range(1, d + 1))
        X = lat.fft(x)
        gfil = self._filter(emb)                                        # (B, *shape)
        out_hat = gfil * X
        div = gfil.sum(sites)
        K, G = self.channels, self.global_channels
        if K + G:
            c = self.coef(emb)
            c1, c3 = c[:, :K + G], c[:, K + G:]
        direct = None
        if K:
            u_hat, w_hat = lat.fft(self._placed(self.u)), lat.fft(self._placed(self.w))
            view = (-1, K) + (1,) * d
            k1, k3 = c1[:, :K].reshape(view), c3[:, :K].reshape(view)
            if self._direct():
                a = self._conv_in(x)                                    # (B, K, *shape)
            else:
                a = lat.ifft(X.unsqueeze(1) * u_hat.unsqueeze(0))
            th = torch.tanh(a)
            sig = (k1 - k3) * th + k3 * a                 # c1 tanh a + c3 (a - tanh a)
            if self._direct():
                direct = self._conv_out(sig)
            else:
                out_hat = out_hat + (w_hat.unsqueeze(0) * lat.fft(sig)).sum(1)
            ck = (u_hat * w_hat).real.sum(sites) / V                    # (K,) diag of W U
            th2 = (th * th).sum(tuple(range(2, d + 2)))                 # (B, K)
            dsum = V * c1[:, :K] + (c3[:, :K] - c1[:, :K]) * th2        # sum_y sigma'
            div = div + (ck.unsqueeze(0) * dsum).sum(1)
        if G:
            a = x.mean(sites)[:, None] * self.s_global[None, :]         # (B, G)
            g1, g3 = c1[:, K:], c3[:, K:]
            th = torch.tanh(a)
            shift = ((g1 * th + g3 * (a - th)) * self.w_global).sum(1)  # (B,)
            zero_mode = torch.zeros(lat.shape, dtype=X.dtype, device=X.device)
            zero_mode.view(-1)[0] = V                                   # fft of the constant 1
            out_hat = out_hat + shift.reshape((-1,) + (1,) * d) * zero_mode
            th2 = th * th
            div = div + ((g1 * (1 - th2) + g3 * th2) * self.s_global * self.w_global).sum(1)
        v = lat.ifft(out_hat)
        if direct is not None:
            v = v + direct
        return v.to(phi.dtype), div.to(phi.dtype)

    def forward(self, phi: torch.Tensor, tau) -> torch.Tensor:
        return self.divergence(phi, tau)[0]
