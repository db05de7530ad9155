"""Building blocks of the score networks: periodic convolutions, time embedding, residual blocks.

Symmetry by construction (used by every network in this package):

* Translation equivariance: every spatial operation is a circular (periodic) convolution, a
  site-wise function, a roll, or a global mean broadcast back to all sites.
* Z2 oddness s(-phi) = -s(phi): every operation acting on the field is odd. Convolutions and
  linear maps carry NO bias, the activation is tanh (odd), and time enters only
  multiplicatively through per-channel gains g(t) (functions of t alone, which may have
  biases). A composition of odd maps, sums of odd maps and products of an odd map with a
  phi-independent factor is odd.

All parameters are initialized from an explicit ``torch.Generator`` (no global RNG).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rgdist.catalog import DTYPES as _DTYPE_NAMES
from rgdist.checks import check_positive_int  # noqa: F401  (re-exported to the model modules)
from rgdist.lattice.geometry import Lattice

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
SUPPORTED_DIMS = tuple(_CONV)


def check_conv_dim(d: int) -> int:
    """Convolutional networks exist for d in 1..3 (torch convNd); reject others clearly."""
    if d not in _CONV:
        raise ValueError(f"convolutional score networks support lattice dimension d in "
                         f"{SUPPORTED_DIMS}, got d = {d}")
    return d


def normal_(tensor: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Fill ``tensor`` with N(0, std^2) draws from ``generator`` (no global RNG)."""
    with torch.no_grad():
        sample = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype,
                             device=generator.device)
        tensor.copy_(sample * std)
    return tensor


def as_time(t, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Return t as a tensor of shape (batch,) with the dtype/device of ``like``.

    Accepts a Python number, a 0-d tensor, or a tensor of shape (batch,)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


def channel_view(g: torch.Tensor, d: int) -> torch.Tensor:
    """(B, C) -> (B, C, 1, ..., 1) for broadcasting against (B, C, *shape)."""
    return g.reshape(g.shape + (1,) * d)


def site_mean(h: torch.Tensor, d: int) -> torch.Tensor:
    """Mean over the d lattice axes of (B, C, *shape), kept broadcastable."""
    return h.mean(dim=tuple(range(-d, 0)), keepdim=True)


class Linear(nn.Module):
    """y = x W^T (+ b). ``bias=False`` for maps acting on the field (oddness)."""

    def __init__(self, n_in: int, n_out: int, bias: bool, generator: torch.Generator,
                 std: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in, dtype=torch.float64))
        normal_(self.weight, 1.0 / math.sqrt(n_in) if std is None else std, generator)
        self.bias = nn.Parameter(torch.zeros(n_out, dtype=torch.float64)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last(_3d) if x is stored that way (and not also plain contiguous)."""
    if not x.is_contiguous():
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
            return torch.channels_last_3d
    return torch.contiguous_format


class _PeriodicPad(torch.autograd.Function):
    """Periodic halo of width p on the last d axes (the values of F.pad(mode="circular")).

    Forward: copy x into the core of an empty padded tensor y (same memory layout), then
    axis by axis fill the halos from the opposite edge of y itself,
        y[:p] = y[n:n+p],   y[n+p:] = y[p:2p]          (corners come out right).
    Backward (the adjoint, a fold), axes in reverse order on a copy of the gradient g:
        g[p:2p] += g[n+p:],  g[n:n+p] += g[:p],   then g_x = the core of g.
    F.pad's generic backward scatters through a zero-filled tensor per slice, which made the
    padding cost more than the convolutions of the score networks on CPU. The backward is
    built from differentiable operations, so double backward works too.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: int, d: int) -> torch.Tensor:
        ctx.p, ctx.d = p, d
        axes = range(x.dim() - d, x.dim())
        shape = list(x.shape)
        for ax in axes:
            shape[ax] += 2 * p
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
        core = out
        for ax in axes:
            core = core.narrow(ax, p, x.shape[ax])
        core.copy_(x)
        for ax in axes:
            n = x.shape[ax]
            out.narrow(ax, 0, p).copy_(out.narrow(ax, n, p))
            out.narrow(ax, n + p, p).copy_(out.narrow(ax, p, p))
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        p, d = ctx.p, ctx.d
        axes = range(g.dim() - d, g.dim())
        g = g.clone()
        for ax in reversed(axes):
            n = g.shape[ax] - 2 * p
            g.narrow(ax, p, p).add_(g.narrow(ax, n + p, p))
            g.narrow(ax, n, p).add_(g.narrow(ax, 0, p))
        for ax in axes:
            g = g.narrow(ax, p, g.shape[ax] - 2 * p)
        return g, None, None


def periodic_pad(x: torch.Tensor, p: int, d: int) -> torch.Tensor:
    """Pad the last d axes of x periodically by p sites on each side (equal to
    ``F.pad(x, (p,) * 2d, mode="circular")``); a fast forward and backward for p <= N."""
    if p == 0:
        return x
    if any(p > n for n in x.shape[-d:]):
        return F.pad(x, (p,) * (2 * d), mode="circular")
    return _PeriodicPad.apply(x, p, d)


class PeriodicConv(nn.Module):
    """Circular convolution without bias: (B, C_in, *shape) -> (B, C_out, *shape).

    Kernel size k (odd) with dilation D uses circular padding D (k - 1)/2 on each side, so
    the output lives on the same periodic lattice and commutes with every roll.
    """

    def __init__(self, d: int, c_in: int, c_out: int, generator: torch.Generator, *,
                 kernel: int = 3, dilation: int = 1, std: float | None = None):
        super().__init__()
        self.d = check_conv_dim(d)
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd integer >= 1, got {kernel}")
        self.kernel, self.dilation = kernel, dilation
        self.pad = dilation * (kernel - 1) // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, *(kernel,) * d, dtype=torch.float64))
        fan_in = c_in * kernel**d
        normal_(self.weight, 1.0 / math.sqrt(fan_in) if std is None else std, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = periodic_pad(x, self.pad, self.d)
        return _CONV[self.d](x, self.weight, None, dilation=self.dilation)


class TimeEmbedding(nn.Module):
    """Features of the normalized time tau = t / t_max, then a small MLP.

    features(t) = [tau, u, sin(pi k tau), cos(pi k tau), sin(pi k u), cos(pi k u)]_{k=1..K}
    with u = clamp(1 + log(tau) / L, 0, 1), L = log(1/tau_floor) (tau_floor = 1e-6): u is
    log t rescaled to [0, 1], so short times (where the score varies like Sigma_t^{-1/2}) are
    resolved as well as long ones, for schemes with T = 1 and T = 40 alike.
    MLP: Linear(2 + 4K, H) -> SiLU -> Linear(H, H) -> SiLU. Output (B, H).
    """

    TAU_FLOOR = 1e-6

    def __init__(self, t_max: float, hidden: int, n_freq: int, generator: torch.Generator):
        super().__init__()
        if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 0):
            raise ValueError(f"t_max must be a finite number > 0, got {t_max!r}")
        self.t_max, self.n_freq, self.hidden = float(t_max), int(n_freq), int(hidden)
        n_feat = 2 + 4 * self.n_freq
        self.fc1 = Linear(n_feat, hidden, True, generator)
        self.fc2 = Linear(hidden, hidden, True, generator)

    def features(self, t: torch.Tensor) -> torch.Tensor:
        tau = t / self.t_max
        log_range = -math.log(self.TAU_FLOOR)
        u = (1 + torch.log(tau.clamp_min(self.TAU_FLOOR)) / log_range).clamp(0, 1)
        k = math.pi * torch.arange(1, self.n_freq + 1, dtype=t.dtype, device=t.device)
        a, b = tau[:, None] * k, u[:, None] * k
        return torch.cat([tau[:, None], u[:, None], a.sin(), a.cos(), b.sin(), b.cos()], dim=1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return F.silu(self.fc2(F.silu(self.fc1(self.features(t)))))


class ResBlock(nn.Module):
    """Odd, time-conditioned residual block with a global-mean input.

        u = conv1(h) + W_g mean_x(h)             (W_g: C x C, no bias; mean broadcast)
        u = tanh(u * (1 + a(t)))                 (a(t): per-channel, from the embedding)
        h <- h + conv2(u) * b(t)                 (b(t): per-channel, starts at 0)

    The global mean lets the block see the magnetization (two-peaked near criticality),
    which a local stencil cannot. Dilation D acts on a lattice of spacing D (U-Net levels).
    """

    def __init__(self, d: int, channels: int, hidden: int, generator: torch.Generator, *,
                 kernel: int = 3, dilation: int = 1):
        super().__init__()
        self.d = d
        self.conv1 = PeriodicConv(d, channels, channels, generator, kernel=kernel,
                                  dilation=dilation)
        self.conv2 = PeriodicConv(d, channels, channels, generator, kernel=kernel,
                                  dilation=dilation)
        self.glob = Linear(channels, channels, False, generator, std=0.5 / math.sqrt(channels))
        self.gain_in = Linear(hidden, channels, True, generator, std=0.1 / math.sqrt(hidden))
        self.gain_out = Linear(hidden, channels, True, generator, std=0.1 / math.sqrt(hidden))
        with torch.no_grad():
            self.gain_out.bias.fill_(0.5)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        g = self.glob(site_mean(h, self.d).flatten(1))
        u = self.conv1(h) + channel_view(g, self.d)
        u = torch.tanh(u * channel_view(1 + self.gain_in(emb), self.d))
        return h + self.conv2(u) * channel_view(self.gain_out(emb), self.d)


class OutputGain(nn.Module):
    """Positive time-dependent output scale exp(w . emb + b) (learns e.g. Sigma_t^{-1/2})."""

    def __init__(self, hidden: int, generator: torch.Generator):
        super().__init__()
        self.lin = Linear(hidden, 1, True, generator, std=0.1 / math.sqrt(hidden))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.lin(emb)[:, 0])


def lift_input(phi: torch.Tensor, d: int) -> torch.Tensor:
    """(B, *shape) -> (B, 2, *shape): the field and its mean (the magnetization) broadcast."""
    x = phi.unsqueeze(1)
    return torch.cat([x, site_mean(x, d).expand_as(x)], dim=1)


# --------------------------------------------------------------------------- model base
#: model dtypes by name (the names of rgdist.catalog.DTYPES, shared with the campaign schema)
DTYPES = {name: getattr(torch, name) for name in _DTYPE_NAMES}


def check_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")


def init_generator(init_seed: int, generator: torch.Generator | None) -> torch.Generator:
    """The generator that initializes parameters: ``generator`` if given (it is advanced),
    else a fresh CPU generator seeded with ``init_seed``."""
    if generator is None:
        return torch.Generator().manual_seed(init_seed)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got "
                         f"{type(generator).__name__}")
    return generator


class ScoreModel(nn.Module):
    """Base class: validates inputs, handles dtypes, delegates to ``score(x, t)``."""

    def __init__(self, lattice: Lattice, *, channels_last: bool = False):
        super().__init__()
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a rgdist Lattice, got {type(lattice).__name__}")
        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True or False, got {channels_last!r}")
        self.lattice = lattice
        self.d = lattice.d
        self.channels_last = channels_last

    @property
    def param_dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float64

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """channels_last layout for 4-d activations when requested (faster conv on CPU)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, phi: torch.Tensor, t) -> torch.Tensor:
        self.lattice.check_field(phi)
        t = as_time(t, phi.shape[0], phi)
        dtype = self.param_dtype
        out = self.score(phi.to(dtype), t.to(dtype))
        return out.to(phi.dtype)

    def score(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
