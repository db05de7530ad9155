"""Coupling-conditioned score models: s_theta(phi, t; m2, lam) for a window of couplings.

Every model family of this package reads time through one module, ``TimeEmbedding``
(``model.embed``, and the remainder's ``embed`` for the effective model). Conditioning
replaces each of them by a :class:`CoupledTimeEmbedding`, whose first layer also sees the
normalized couplings

    c = ((m2 - m2_mid) / m2_half, (lam - lam_mid) / lam_half)   (a component is 0 when its
                                                                  window has zero width),

    e(t, c) = silu(fc2(silu(fc1(features(t)) + W_c c))),

so every coefficient the model derives from its time embedding (filters, gains, couplings)
becomes a joint function of (t, m2, lam). ``W_c`` starts at 0: a freshly conditioned model
equals the unconditioned one bit for bit at every coupling. The model stays fully
convolutional (it runs on any lattice size) and keeps its symmetries (c enters like t).

The Gaussian-exact wrapper (``GaussianExactScore``) needs the data spectrum G of the coupling
it runs at. :class:`SpectrumTable` holds G measured at the training points (HMC) and
interpolates log G(p) bilinearly in (m2, lam) on the product grid of the training couplings
(or, for a grid that follows the critical line, along rows of constant lam and linearly
between them): exact at a training point, and between points an interpolation of a smooth
positive function (the residual net learns what the interpolation misses; the correction makes the sampler exact
whatever G is used).

:func:`set_couplings` binds a conditioned model to one coupling (conditioning input and, for
the wrapper, the interpolated G); the bound model is an ordinary ``model(phi, t)`` for every
sampler, density and correction of the package.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rgdist.models.effective import GaussianExactScore
from rgdist.models.layers import TimeEmbedding

__all__ = ["CouplingWindow", "CoupledTimeEmbedding", "SpectrumTable", "condition_model",
           "is_conditioned", "set_couplings"]


def _finite(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


class CouplingWindow:
    """The trained window [m2_lo, m2_hi] x [lam_lo, lam_hi] and the normalization of c."""

    def __init__(self, m2: tuple[float, float], lam: tuple[float, float]):
        self.m2 = tuple(sorted(_finite("m2", float(x)) for x in m2))
        self.lam = tuple(sorted(_finite("lam", float(x)) for x in lam))

    @classmethod
    def of(cls, couplings) -> "CouplingWindow":
        """The smallest window holding every (m2, lam) in ``couplings``."""
        c = np.asarray(couplings, dtype=np.float64).reshape(-1, 2)
        if c.shape[0] < 1:
            raise ValueError("couplings must hold at least one (m2, lam)")
        return cls((c[:, 0].min(), c[:, 0].max()), (c[:, 1].min(), c[:, 1].max()))

    def contains(self, m2: float, lam: float, tol: float = 1e-12) -> bool:
        return (self.m2[0] - tol <= m2 <= self.m2[1] + tol
                and self.lam[0] - tol <= lam <= self.lam[1] + tol)

    def check(self, m2: float, lam: float, allow_outside: bool = False) -> None:
        """ValueError naming the window when (m2, lam) lies outside it (unless allowed)."""
        if not allow_outside and not self.contains(m2, lam):
            raise ValueError(f"coupling (m2={m2:g}, lam={lam:g}) lies outside the trained "
                             f"window m2 in [{self.m2[0]:g}, {self.m2[1]:g}], lam in "
                             f"[{self.lam[0]:g}, {self.lam[1]:g}]")

    def features(self, m2: float, lam: float) -> list[float]:
        out = []
        for v, (lo, hi) in ((m2, self.m2), (lam, self.lam)):
            half = 0.5 * (hi - lo)
            out.append(0.0 if half == 0 else (v - 0.5 * (lo + hi)) / half)
        return out

    def to_list(self) -> list[float]:
        return [*self.m2, *self.lam]


class CoupledTimeEmbedding(TimeEmbedding):
    """A TimeEmbedding whose first layer also sees the couplings (module docstring)."""

    N_COUPLINGS = 2

    def __init__(self, base: TimeEmbedding):
        nn.Module.__init__(self)
        self.t_max, self.n_freq, self.hidden = base.t_max, base.n_freq, base.hidden
        self.fc1, self.fc2 = base.fc1, base.fc2
        w = base.fc1.weight
        self.coupling = nn.Parameter(torch.zeros(self.hidden, self.N_COUPLINGS, dtype=w.dtype,
                                                 device=w.device))
        self.register_buffer("cond", torch.zeros(self.N_COUPLINGS, dtype=w.dtype,
                                                 device=w.device), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.fc1(self.features(t)) + self.coupling.to(t.dtype) @ self.cond.to(t.dtype)
        return torch.nn.functional.silu(self.fc2(torch.nn.functional.silu(h)))


def _embeddings(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, CoupledTimeEmbedding)]


def is_conditioned(model: nn.Module) -> bool:
    return bool(_embeddings(model))


def condition_model(model: nn.Module, window: CouplingWindow) -> nn.Module:
    """Condition ``model`` in place on the couplings of ``window`` (module docstring);
    returns it. Every TimeEmbedding inside is replaced (the same parameters plus W_c = 0)."""
    if not isinstance(window, CouplingWindow):
        raise ValueError(f"window must be a CouplingWindow, got {type(window).__name__}")
    if is_conditioned(model):
        raise ValueError("model is already conditioned on the couplings")
    found = False
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is TimeEmbedding:
                setattr(parent, name, CoupledTimeEmbedding(child))
                found = True
    if not found:
        raise ValueError(f"{type(model).__name__} has no time embedding to condition")
    model.coupling_window = window
    return model


class SpectrumTable:
    """Measured spectra G(p) at training couplings, interpolated in log G.

    ``couplings``: (P, 2) distinct (m2, lam); ``spectra``: (P, *shape), finite and > 0.
    A product grid of m2 x lam values is interpolated bilinearly. Any other grid is read as
    rows of constant lam (rgdist.coupling_rows; each lam needs at least 2 m2 values), e.g. a
    phase-diagram grid that follows the critical line: G is interpolated linearly in log G
    along each row at the same relative position u = (m2 - lo(lam)) / (hi(lam) - lo(lam)),
    then linearly in lam between the two rows (bilinear in (u, lam); for a product grid the
    same as bilinear in (m2, lam)). Exact at a training point; outside the region of the
    rows: ValueError unless allowed (then a linear extrapolation of log G)."""

    def __init__(self, couplings, spectra):
        from rgdist.coupling_rows import CouplingRows

        c = np.asarray(couplings, dtype=np.float64).reshape(-1, 2)
        g = np.asarray(spectra, dtype=np.float64)
        if g.shape[0] != c.shape[0] or not np.all(np.isfinite(g)) or not np.all(g > 0):
            raise ValueError("spectra must be finite, > 0, one per coupling")
        if len({(float(m), float(l)) for m, l in c}) != c.shape[0]:
            raise ValueError(f"the training couplings must be distinct; got {c.tolist()}")
        self.rows = CouplingRows(c)
        self.m2s, self.lams = np.unique(c[:, 0]), np.unique(c[:, 1])
        self.window = CouplingWindow((self.m2s[0], self.m2s[-1]), (self.lams[0], self.lams[-1]))
        self.product = self.rows.is_product
        if self.product:
            self.g = np.empty((self.m2s.size, self.lams.size) + g.shape[1:])
            for (m2, lam), gi in zip(c, g):
                self.g[np.searchsorted(self.m2s, m2), np.searchsorted(self.lams, lam)] = gi
            self.log_g = np.log(self.g)
            return
        short = [f"lam = {lam:g}" for lam, r in zip(self.rows.lams, self.rows.m2s) if r.size < 2]
        if short:
            raise ValueError("the training couplings must form a product grid of m2 x lam "
                             "values, or rows of constant lam with at least 2 m2 values each; "
                             f"{', '.join(short)} has only one; got {c.tolist()}")
        self.row_g = []  # per row: (m2 knots, log G at the knots), m2 ascending
        for lam, knots in zip(self.rows.lams, self.rows.m2s):
            sel = c[:, 1] == lam
            order = np.argsort(c[sel, 0])
            self.row_g.append((knots, np.log(g[sel][order])))
        self._points = {(float(m), float(l)): gi for (m, l), gi in zip(c, g)}

    @staticmethod
    def _bracket(axis: np.ndarray, v: float) -> tuple[int, int, float]:
        if axis.size == 1:
            return 0, 0, 0.0
        j = int(np.clip(np.searchsorted(axis, v) - 1, 0, axis.size - 2))
        return j, j + 1, (v - axis[j]) / (axis[j + 1] - axis[j])

    def at(self, m2: float, lam: float, allow_outside: bool = False) -> torch.Tensor:
        """G(p) at (m2, lam), float64 (linear extrapolation of log G when allowed outside)."""
        self.window.check(m2, lam, allow_outside)
        if not self.product:
            return self._at_rows(float(m2), float(lam), allow_outside)
        hit_m2, hit_lam = np.flatnonzero(self.m2s == m2), np.flatnonzero(self.lams == lam)
        if hit_m2.size and hit_lam.size:  # a training point: its measured G, bit for bit
            return torch.from_numpy(self.g[hit_m2[0], hit_lam[0]].copy())
        i0, i1, a = self._bracket(self.m2s, m2)
        j0, j1, b = self._bracket(self.lams, lam)
        lg = ((1 - a) * (1 - b) * self.log_g[i0, j0] + a * (1 - b) * self.log_g[i1, j0]
              + (1 - a) * b * self.log_g[i0, j1] + a * b * self.log_g[i1, j1])
        return torch.from_numpy(np.exp(lg))

    def _at_rows(self, m2: float, lam: float, allow_outside: bool) -> torch.Tensor:
        self.rows.check(m2, lam, allow_outside)
        hit = self._points.get((m2, lam))
        if hit is not None:  # a training point: its measured G, bit for bit
            return torch.from_numpy(hit.copy())
        j0, j1, b = self.rows.bracket(lam)
        lo, hi = self.rows.bounds(lam)
        if not hi > lo:
            raise ValueError(f"lam = {lam:g} lies too far outside the rows' lam range: "
                             f"the extrapolated m2 interval is empty")
        u = (m2 - lo) / (hi - lo)
        lg = 0.0
        for j, w in ((j0, 1 - b), (j1, b)):
            knots, log_g = self.row_g[j]
            i0, i1, a = self._bracket(knots, knots[0] + u * (knots[-1] - knots[0]))
            lg = lg + w * ((1 - a) * log_g[i0] + a * log_g[i1])
        return torch.from_numpy(np.exp(lg))


def set_couplings(model: nn.Module, m2: float, lam: float, spectrum=None, *,
                  allow_outside: bool = False) -> nn.Module:
    """Bind a conditioned ``model`` to (m2, lam) (and, for a Gaussian-exact model, to the data
    spectrum ``spectrum``); returns the model. Outside the trained window: ValueError unless
    ``allow_outside``."""
    embeds = _embeddings(model)
    if not embeds:
        raise ValueError("model is not conditioned on the couplings (condition_model first)")
    m2, lam = _finite("m2", m2), _finite("lam", lam)
    window = model.coupling_window
    window.check(m2, lam, allow_outside)
    feats = window.features(m2, lam)
    with torch.no_grad():
        for e in embeds:
            e.cond.copy_(torch.tensor(feats, dtype=e.cond.dtype))
        wrappers = [m for m in model.modules() if isinstance(m, GaussianExactScore)]
        if wrappers and spectrum is None:
            raise ValueError("a Gaussian-exact conditioned model needs the spectrum of the "
                             "coupling (SpectrumTable.at)")
        for w in wrappers:
            G = torch.as_tensor(spectrum, dtype=w.data_spectrum.dtype)
            if tuple(G.shape) != tuple(w.data_spectrum.shape):
                raise ValueError(f"spectrum must have shape {tuple(w.data_spectrum.shape)}, "
                                 f"got {tuple(G.shape)}")
            # a new buffer, never an in-place copy: the old one may share memory with the
            # caller's spectrum (GaussianExactScore keeps the tensor it was given)
            w.data_spectrum = G.to(w.data_spectrum.device).clone()
    return model
