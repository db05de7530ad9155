"""The probability-flow field f(phi, t) and what is known about its Jacobian in closed form.

Probability-flow ODE (position space, mode-wise filters; t runs from T down to t_min):

    dphi/dt = f(phi, t) = ifft( -alpha_t(p) phi~(p) - 1/2 beta_t^2(p) s~(phi, t)(p) ).

Closed-form linear part. The flow is f = ifft(k_t fft(phi)) + ifft(m_t fft(r(phi, t))) with
k_t = -alpha_t, m_t = -beta_t^2/2 and r the score; when the score is known to be
``scheme.gaussian_score(phi, t, G) + remainder`` (a :class:`rgdist.density.GaussianScore`,
or the models' GaussianExactScore built on the same scheme: :func:`split_score`) the
Gaussian part moves into k_t = -alpha_t + beta_t^2 / (2 (A_t^2 G + Sigma_t)) and
r = remainder. The linear part's Jacobian is the circulant K_t with tr K_t = sum_p k_t(p),
used exactly by every density method (for Hutchinson it is a perfect control variate: only
v^T M_t J_r v is estimated); only r is differentiated by autograd. With no remainder the
Heun map is linear and mode-diagonal and log|det| = sum_p log|g(p)| in closed form (g the
per-mode Heun gain).

Closed-form Jacobians: an effective-action model without residual net (alone or inside a
GaussianExactScore) has dr/dphi = Circ(c) + diag(d) (:func:`remainder_jacobian`): no
vector-Jacobian products at all, an O(V) exact trace (method "trace" at any V) and dense
V x V step Jacobians for "discrete" up to V = MAX_STRUCTURED_VOLUME (rgdist.catalog). An
exact-trace model (rgdist.models.TraceScore) gives tr(Circ(m) dr/dphi) in O(V K)
(:func:`remainder_trace`).
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist.density.divergence import batched_jacobian
from rgdist.density.prior import GaussianScore, ScoreFn, same_scheme
from rgdist.rg.schemes import Scheme

#: Gauss-Legendre nodes of the exponential step's remainder weight W (it defines the map)
_QUAD_NODES = 32


def split_score(score_fn, scheme: Scheme):
    """(G, remainder) with score = scheme.gaussian_score(., ., G) + remainder, when known.

    Recognized: :class:`GaussianScore` and the models' GaussianExactScore (any object with
    ``scheme``, ``data_spectrum``, ``net`` and ``residual_scale(t)``; its remainder is
    residual_scale(t) * net(phi, t)), both only when built on an equal scheme (same class,
    lattice and parameters; a deep copy counts). Anything else: (None, score_fn).
    """
    if isinstance(score_fn, GaussianScore) and same_scheme(score_fn.scheme, scheme):
        return score_fn.G, score_fn.remainder
    parts = ("scheme", "data_spectrum", "net", "residual_scale")
    if all(hasattr(score_fn, a) for a in parts) and same_scheme(score_fn.scheme, scheme):
        model = score_fn

        def remainder(phi, t):
            scale = model.residual_scale(t).to(phi.dtype).reshape((-1,) + (1,) * (phi.dim() - 1))
            return scale * model.net(phi, t)

        return model.data_spectrum.detach().to(torch.float64).cpu(), remainder
    return None, score_fn


def remainder_jacobian(score_fn, scheme: Scheme):
    """The closed-form Jacobian of the remainder of :func:`split_score`, when there is one.

    Returns None or a callable ``(phi, t) -> (kernel, diag)`` with
    d remainder / d phi = Circ(kernel) + diag(diag): ``kernel`` the circulant's eigenvalues per
    configuration (momentum space), ``diag`` the position-space diagonal, both (B, *shape).
    Known: a :class:`GaussianScore` given ``remainder_jacobian``; an effective-action model
    without a residual net (rgdist.models.EffectiveActionScore, ``score_jacobian``), alone
    or inside a GaussianExactScore. Such flows need no vector-Jacobian products at all.
    """
    G, rem = split_score(score_fn, scheme)
    if rem is None:
        return None
    if isinstance(score_fn, GaussianScore) and G is not None:
        return score_fn.remainder_jacobian
    if G is not None:  # GaussianExactScore: remainder = residual_scale(t) * net(phi, t)
        net = score_fn.net
        if not getattr(net, "has_structured_jacobian", False):
            return None

        def jac(phi, t):
            scale = score_fn.residual_scale(t).to(phi.dtype)
            scale = scale.reshape((-1,) + (1,) * (phi.dim() - 1))
            kernel, diag = net.score_jacobian(phi, t)
            return scale * kernel, scale * diag

        return jac
    if getattr(score_fn, "has_structured_jacobian", False):
        return score_fn.score_jacobian
    return None


def remainder_trace(score_fn, scheme: Scheme):
    """Exact weighted trace of the remainder of :func:`split_score`, when the model has one.

    Returns None or a callable ``(phi, t, m) -> (r, tr)`` with r the remainder and
    tr = tr(Circ(m) dr/dphi) per configuration (m: real, even mode filter). Known: models with
    ``has_exact_trace`` and ``divergence(phi, t, m)`` (rgdist.models.TraceScore), alone or
    inside a GaussianExactScore (remainder residual_scale(t) * net). O(V K), no
    vector-Jacobian products.
    """
    G, rem = split_score(score_fn, scheme)
    if rem is None:
        return None
    if G is not None and not isinstance(score_fn, GaussianScore):
        net = score_fn.net
        if not getattr(net, "has_exact_trace", False):
            return None

        def trace(phi, t, m):
            scale = score_fn.residual_scale(t).to(phi.dtype)
            r, tr = net.divergence(phi, t, m)
            return scale.reshape((-1,) + (1,) * (phi.dim() - 1)) * r, scale * tr

        return trace
    if G is None and getattr(score_fn, "has_exact_trace", False):
        return score_fn.divergence
    return None


def has_exact_trace(score_fn, scheme: Scheme, differentiable: bool = False) -> bool:
    """True when the flow of ``score_fn`` has an O(V) exact divergence: a Gaussian part in
    closed form plus nothing, a structured remainder or an exact-trace model.
    ``differentiable=True`` asks for one whose trace carries gradients to the parameters
    (exact-trace models; the structured closed forms are evaluated without autograd)."""
    flow = FlowField(score_fn, scheme)
    if differentiable:
        return flow.rem_trace is not None
    return flow.exact_trace


class FlowField:
    """f(phi, t) = ifft(k_t fft(phi) + m_t fft(r(phi, t))), t a Python float, where

        k_t = -alpha_t (+ beta_t^2 / (2 (A_t^2 G + Sigma_t)) with a Gaussian part G),
        m_t = -beta_t^2 / 2,  r = the score (or its non-Gaussian remainder; None = 0).

    Jacobian: df/dphi = K_t + M_t dr/dphi with K, M the circulant matrices of k, m
    (symmetric: k, m are real and even in p), tr K = sum_p k(p). A structured remainder
    (dr/dphi = Circ(c) + diag(d), see :func:`remainder_jacobian`) gives
    df/dphi = Circ(k + m c) + M_t diag(d) in closed form and
    tr df/dphi = sum_p (k + m c) + mean_p(m) sum_x d(x).
    """

    def __init__(self, score_fn: ScoreFn, scheme: Scheme):
        self.scheme, self.lat = scheme, scheme.lattice
        self.G, self.rem = split_score(score_fn, scheme)
        self.rem_jac = None if self.rem is None else remainder_jacobian(score_fn, scheme)
        self.score_fn = score_fn
        self.rem_trace = None
        if self.rem is not None and self.rem_jac is None:
            self.rem_trace = remainder_trace(score_fn, scheme)
        self.nfe = 0
        self.jacobians = 0  # full remainder Jacobians by autograd (implicit steps)
        self._cache: dict = {}

    @property
    def structured(self) -> bool:
        """True when the Jacobian is known in closed form (no vector-Jacobian products)."""
        return self.rem is None or self.rem_jac is not None

    @property
    def exact_trace(self) -> bool:
        """True when the divergence is exact in O(V) (closed form or an exact-trace model)."""
        return self.structured or self.rem_trace is not None

    def _circulant_index(self, device) -> torch.Tensor:
        """idx (V, V): flat index of the site x - y (periodic) for sites x (rows), y (cols)."""
        key = ("circ_idx", device)
        if key not in self._cache:
            shape = torch.tensor(self.lat.shape, device=device)
            grids = torch.meshgrid(*[torch.arange(n, device=device) for n in self.lat.shape],
                                   indexing="ij")
            coords = torch.stack([g.reshape(-1) for g in grids], 1)          # (V, d)
            diff = (coords[:, None, :] - coords[None, :, :]) % shape         # (V, V, d)
            strides = torch.ones(self.lat.d, dtype=torch.long, device=device)
            for i in range(self.lat.d - 2, -1, -1):
                strides[i] = strides[i + 1] * self.lat.shape[i + 1]
            self._cache[key] = (diff * strides).sum(-1)
        return self._cache[key]

    def circulant(self, eig: torch.Tensor) -> torch.Tensor:
        """The (B, V, V) circulant matrices with eigenvalues ``eig`` (B, *shape), real and even."""
        col = self.lat.ifft(eig.to(torch.complex128 if eig.dtype == torch.float64
                                   else torch.complex64)).to(eig.dtype)
        col = col.reshape(eig.shape[0], -1)
        V = col.shape[1]
        return col[:, self._circulant_index(eig.device).reshape(-1)].reshape(-1, V, V)

    def remainder_jacobian(self, phi: torch.Tensor, t: float):
        """(kernel, diag) of the structured remainder at (phi, t), each (B, *shape)."""
        tb = torch.full((phi.shape[0],), t, dtype=phi.dtype, device=phi.device)
        kernel, diag = self.rem_jac(phi, tb)
        return kernel.to(phi.dtype).expand_as(phi), diag.to(phi.dtype).expand_as(phi)

    def _coef(self, name: str, t: float) -> torch.Tensor:
        return getattr(self.scheme, name)(torch.tensor(t, dtype=torch.float64))

    def kernels(self, t: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("k", t, like.device, like.dtype)
        if key not in self._cache:
            k = -self._coef("alpha", t)
            b2 = self._coef("beta2", t)
            if self.G is not None:
                A, Sigma = self._coef("A", t), self._coef("Sigma", t)
                P = (A * A * self.G + Sigma).clamp_min(torch.finfo(torch.float64).tiny)
                k = k + 0.5 * b2 / P
            m = -0.5 * b2
            self._cache[key] = (k.to(like.device, like.dtype), m.to(like.device, like.dtype))
        return self._cache[key]

    def dense(self, t: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The circulant matrices (K_t, M_t), shape (V, V)."""
        key = ("dense", t, like.device, like.dtype)
        if key not in self._cache:
            V = self.lat.volume
            E = torch.eye(V, dtype=like.dtype, device=like.device).reshape(V, *self.lat.shape)
            k, m = self.kernels(t, like)
            self._cache[key] = tuple(self.lat.filter(E, c).reshape(V, V) for c in (k, m))
        return self._cache[key]

    def _marginal(self, t: float) -> torch.Tensor:
        """P_t = A_t^2 G + Sigma_t (float64), the Gaussian part's marginal spectrum."""
        A, Sigma = self._coef("A", t), self._coef("Sigma", t)
        return (A * A * self.G + Sigma).clamp_min(torch.finfo(torch.float64).tiny)

    def _propagator(self, u: float, s: float) -> torch.Tensor:
        """Exact propagator exp(-int_s^u k) of the linear part from time u down to s <= u:
        sqrt(P_s / P_u) with a Gaussian part (it maps N(0, P_u) onto N(0, P_s)), else A_s/A_u."""
        if self.G is not None:
            return torch.sqrt(self._marginal(s) / self._marginal(u))
        return torch.exp(self._coef("log_A", s) - self._coef("log_A", u))

    def exp_coefficients(self, t: float, s: float, like: torch.Tensor):
        """(E, W) of the exponential step t -> s < t (per mode, see
        :func:`rgdist.density.steps.exponential_step`).

        E = exp(-int_s^t k), W = int_s^t exp(-int_s^u k) beta_u^2 / 2 du, the latter by a
        32-node Gauss-Legendre rule (it defines the map; densities are exact for it as run).
        """
        key = ("exp", t, s, like.device, like.dtype)
        if key not in self._cache:
            x, w = np.polynomial.legendre.leggauss(_QUAD_NODES)
            half, mid = 0.5 * (t - s), 0.5 * (t + s)
            E = self._propagator(t, s)
            W = torch.zeros_like(E)
            for xi, wi in zip(x.tolist(), w.tolist()):
                u = mid + half * xi
                W = W + (half * wi) * self._propagator(u, s) * 0.5 * self._coef("beta2", u)
            self._cache[key] = (E.to(like.device, like.dtype), W.to(like.device, like.dtype))
        return self._cache[key]

    def circulant_single(self, eig: torch.Tensor) -> torch.Tensor:
        """(V, V) circulant matrix with eigenvalues ``eig`` (*shape), cached by identity."""
        key = ("circ1", id(eig))
        if key not in self._cache:
            self._cache[key] = (eig, self.circulant(eig.unsqueeze(0))[0])
        return self._cache[key][1]

    def remainder(self, phi: torch.Tensor, t: float) -> torch.Tensor:
        tb = torch.full((phi.shape[0],), t, dtype=phi.dtype, device=phi.device)
        self.nfe += 1
        return self.rem(phi, tb).to(phi.dtype)

    def combine(self, phi: torch.Tensor, r: torch.Tensor | None, t: float) -> torch.Tensor:
        k, m = self.kernels(t, phi)
        X = k * self.lat.fft(phi)
        if r is not None:
            X = X + m * self.lat.fft(r)
        return self.lat.ifft(X)

    def __call__(self, phi: torch.Tensor, t: float) -> torch.Tensor:
        return self.combine(phi, None if self.rem is None else self.remainder(phi, t), t)

    def with_jacobian(self, phi: torch.Tensor, t: float, max_rows: int):
        """(f, J_f) with J_f (B, V, V) (or (V, V) when there is no remainder)."""
        K, M = self.dense(t, phi)
        if self.rem is None:
            return self(phi, t), K
        if self.rem_jac is not None:
            with torch.no_grad():
                r = self.remainder(phi, t)
                c, d = self.remainder_jacobian(phi, t)
                k, m = self.kernels(t, phi)
                J = self.circulant(k + m * c) + M * d.reshape(d.shape[0], 1, -1)
            return self.combine(phi, r, t), J
        r, J_r = batched_jacobian(lambda z: self.remainder(z, t), phi, max_rows=max_rows)
        return self.combine(phi, r, t), K + M @ J_r

