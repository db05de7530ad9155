"""ConvScore: a fully convolutional, periodic, Z2-odd, time-conditioned score network.

    x   = [phi, M 1]                        (M = mean_x phi broadcast: the magnetization)
    h   = conv_in(x)                        (2 -> C channels, 3^d stencil, no bias)
    h   = ResBlock_k(h, e(t)),  k = 1..n_blocks
    s   = conv_out(h) * exp(g(e(t)))        (C -> 1, no bias; positive time gain)

e(t) is the time embedding of tau = t / t_max and log tau (layers.TimeEmbedding). Oddness
and translation equivariance hold by construction (see layers.py): no biases on
field-dependent maps, tanh activations, multiplicative time conditioning. The output layer
starts at zero, so an untrained model returns s = 0 (and a GaussianExact wrapper starts at
the exact Gaussian score).
"""
from __future__ import annotations

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

_P = MODEL_PARAMS["conv"]  # defaults shared with the campaign schema (rgdist.catalog)


class ConvScore(ScoreModel):
    """Periodic residual CNN score s_theta(phi, t); works on any N (d in 1..3)."""

    def __init__(self, lattice: Lattice, *, channels: int = _P["channels"],
                 blocks: int = _P["blocks"],
                 kernel: int = 3, hidden: int = 32, n_freq: int = 4, t_max: float = 1.0,
                 dtype="float64", init_seed: int = 0,
                 generator: torch.Generator | None = None, channels_last: bool = False):
        super().__init__(lattice, channels_last=channels_last)
        check_conv_dim(lattice.d)
        channels = check_positive_int("channels", channels)
        blocks = check_positive_int("blocks", blocks, 0)
        hidden = check_positive_int("hidden", hidden)
        n_freq = check_positive_int("n_freq", n_freq, 0)
        kernel = check_positive_int("kernel", kernel)
        init_seed = check_positive_int("init_seed", init_seed, 0)
        g = init_generator(init_seed, generator)
        d = lattice.d
        self.embed = TimeEmbedding(t_max, hidden, n_freq, g)
        self.conv_in = PeriodicConv(d, 2, channels, g, kernel=kernel)
        self.blocks = torch.nn.ModuleList(
            ResBlock(d, channels, hidden, g, kernel=kernel) for _ in range(blocks))
        self.conv_out = PeriodicConv(d, channels, 1, g, kernel=kernel, std=0.0)
        self.gain = OutputGain(hidden, g)
        self.to(check_dtype(dtype))

    def score(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        h = self.conv_in(self.memory_format(lift_input(phi, self.d)))
        for block in self.blocks:
            h = block(h, emb)
        out = self.conv_out(h)[:, 0]
        return out * self.gain(emb).reshape((-1,) + (1,) * self.d)
