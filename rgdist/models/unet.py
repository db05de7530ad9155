"""UNetScore: a multiscale periodic U-Net, Z2-odd and EXACTLY translation equivariant.

Levels l = 0..L (L = ``levels``); level l is the lattice coarsened by 2^l per axis.
Coarsening is 2^d-site average pooling and refinement is nearest-neighbour upsampling, both
implemented *undecimated* ("a trous"): level-l features are kept on every fine site, a
3^d stencil at level l is a convolution with dilation 2^l, and

    pool_l:  h_{l+1}(x) = 2^-d sum_{a in {0,1}^d} h_l(x + 2^l a)
    up_l:    h_l(x)     = 2^-d sum_{a in {0,1}^d} h_{l+1}(x - 2^l a)

This equals running the pooled (decimated) U-Net on all 2^{dL} sublattice offsets at once
and averaging the nearest-upsampling choice over them, so the network commutes with EVERY
lattice translation (a decimated U-Net commutes only with shifts by multiples of 2^L), at
a cost ~ (2L + 1) full-resolution residual blocks. The lattice extent must be divisible by
2^L so that the coarse lattices exist.

    h = conv_in([phi, M])
    encoder: skip_l = Block_l(h); h = pool_l(skip_l)          l = 0..L-1
    bottom:  h = Block_L(h)
    decoder: h = Block'_l(merge_l([up_l(h), skip_l]))        l = L-1..0
    s = conv_out(h) * exp(g(e(t)))

merge_l is a bias-free 1x1 convolution (2C -> C). All maps are odd (see layers.py).
"""
from __future__ import annotations

import itertools

import torch

from rgdist.catalog import MODEL_PARAMS
from rgdist.lattice.geometry import Lattice
from rgdist.models.layers import (
    OutputGain,
    PeriodicConv,
    ResBlock,
    ScoreModel,
    TimeEmbedding,
    check_conv_dim,
    check_dtype,
    check_positive_int,
    init_generator,
    lift_input,
)

_P = MODEL_PARAMS["unet"]  # defaults shared with the campaign schema (rgdist.catalog)


def _offsets(d: int, step: int) -> list[tuple[int, ...]]:
    return [tuple(step * a for a in bits) for bits in itertools.product((0, 1), repeat=d)]


def pool(h: torch.Tensor, d: int, step: int) -> torch.Tensor:
    """Undecimated 2^d average pooling at spacing ``step`` (over the last d axes)."""
    dims = tuple(range(-d, 0))
    out = sum(torch.roll(h, tuple(-a for a in off), dims) for off in _offsets(d, step))
    return out / 2**d


def upsample(h: torch.Tensor, d: int, step: int) -> torch.Tensor:
    """Undecimated nearest upsampling at spacing ``step`` (the adjoint of :func:`pool`)."""
    dims = tuple(range(-d, 0))
    out = sum(torch.roll(h, off, dims) for off in _offsets(d, step))
    return out / 2**d


class UNetScore(ScoreModel):
    """Multiscale periodic U-Net score for large lattices (N >= 32 is the intended use)."""

    def __init__(self, lattice: Lattice, *, channels: int = _P["channels"],
                 levels: int = _P["levels"],
                 kernel: int = 3, hidden: int = 32, n_freq: int = 4, t_max: float = 1.0,
                 dtype="float64", init_seed: int = 0,
                 generator: torch.Generator | None = None, channels_last: bool = False):
        super().__init__(lattice, channels_last=channels_last)
        d = check_conv_dim(lattice.d)
        channels = check_positive_int("channels", channels)
        levels = check_positive_int("levels", levels)
        hidden = check_positive_int("hidden", hidden)
        n_freq = check_positive_int("n_freq", n_freq, 0)
        kernel = check_positive_int("kernel", kernel)
        init_seed = check_positive_int("init_seed", init_seed, 0)
        bad = [n for n in lattice.shape if n % 2**levels]
        if bad:
            raise ValueError(f"UNetScore with levels={levels} needs every lattice extent "
                             f"divisible by 2^levels = {2**levels}, got shape {lattice.shape}; "
                             f"use fewer levels or the 'conv' model")
        self.levels = levels
        g = init_generator(init_seed, generator)
        C = channels
        self.embed = TimeEmbedding(t_max, hidden, n_freq, g)
        self.conv_in = PeriodicConv(d, 2, C, g, kernel=kernel)
        self.enc = torch.nn.ModuleList(
            ResBlock(d, C, hidden, g, kernel=kernel, dilation=2**lv) for lv in range(levels))
        self.bottom = ResBlock(d, C, hidden, g, kernel=kernel, dilation=2**levels)
        self.merge = torch.nn.ModuleList(
            PeriodicConv(d, 2 * C, C, g, kernel=1) for _ in range(levels))
        self.dec = torch.nn.ModuleList(
            ResBlock(d, C, hidden, g, kernel=kernel, dilation=2**lv) for lv in range(levels))
        self.conv_out = PeriodicConv(d, C, 1, g, kernel=kernel, std=0.0)
        self.gain = OutputGain(hidden, g)
        self.to(check_dtype(dtype))

    def score(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        d = self.d
        emb = self.embed(t)
        h = self.conv_in(self.memory_format(lift_input(phi, d)))
        skips = []
        for lv, block in enumerate(self.enc):
            h = block(h, emb)
            skips.append(h)
            h = pool(h, d, 2**lv)
        h = self.bottom(h, emb)
        for lv in reversed(range(self.levels)):
            h = upsample(h, d, 2**lv)
            h = self.merge[lv](torch.cat([h, skips[lv]], dim=1))
            h = self.dec[lv](h, emb)
        out = self.conv_out(h)[:, 0]
        return out * self.gain(emb).reshape((-1,) + (1,) * d)
