"""Model log-densities of the probability-flow sampler (the proposal density of exact MH).

Probability-flow ODE (position space, mode-wise filters; t runs from T down to t_min):

    dphi/dt = f(phi, t) = ifft( -alpha_t(p) phi~(p) - 1/2 beta_t^2(p) s~(phi, t)(p) ).

Along a solution, d/dt log p_t(phi_t) = -div f, hence

    log p_{t_min}(phi_{t_min}) = log p_T(phi_T) + int_{t_min}^{T} div f(phi_t, t) dt,

with p_T the Gaussian prior of spectrum S_T = ``scheme.prior_spectrum(prior_G)`` (G2 units).
Its exact log-density (position-space covariance C = circulant with eigenvalues S(p); by
Parseval phi^T C^-1 phi = (1/V) sum_p |phi~(p)|^2 / S(p) and log det C = sum_p log S(p),
each momentum counted once, so the pairing phi~(-p) = phi~(p)* of a real field is automatic):

    log p(phi) = -1/(2V) sum_p |phi~(p)|^2 / S(p) - 1/2 sum_p log(2 pi S(p)).

Time stepping is Heun's method on the grid ``scheme.time_grid(n_steps, grid, t_min)``,
identical to ``rgdist.sample.solvers`` solver "heun_ode" with ``denoise=False`` (Euler on a
last step that ends at t = 0). Three ways to get the log-density (``method``):

* ``"discrete"``: EXACT density of the discrete Heun map actually run. Each step
  x -> y = Phi_k(x) is a deterministic map, so log q(y) = log q(x) - log|det dPhi_k/dx|; the
  Jacobian of the whole step (both score calls) is formed by V batched vector-Jacobian
  products and its log|det| taken by LU. Independence Metropolis-Hastings with this density
  is exact for the sampler run (any step count). For configurations not produced by the
  sampler (``ode_log_likelihood``) each step is inverted by Newton's method first.
* ``"exact"``: the continuous-time formula with the exact divergence tr(df/dphi) (the same
  V vector-Jacobian products, diagonal only) integrated by the trapezoid rule along the Heun
  path (Heun on the augmented ODE). Accurate to O(h^2); not the exact density of the
  discrete map, so MH with it carries an O(h^2) bias.
* ``"hutchinson"``: div f estimated by v^T (df/dphi) v with ``n_probes`` Rademacher or
  Gaussian probes per evaluation (unbiased); the estimator's variance (sum over evaluations
  of (weight)^2 * sample variance / n_probes) is reported. Any volume.

Closed-form linear part. The flow is f = ifft(k_t fft(phi)) + ifft(m_t fft(r(phi, t))) with
k_t = -alpha_t, m_t = -beta_t^2/2 and r the score; when the score is known to be
``scheme.gaussian_score(phi, t, G) + remainder`` (a :class:`GaussianScore`, or the models'
GaussianExactScore built on the same scheme) the Gaussian part moves into
k_t = -alpha_t + beta_t^2 / (2 (A_t^2 G + Sigma_t)) and r = remainder. The linear part's
Jacobian is the circulant K_t with tr K_t = sum_p k_t(p), used exactly by every method (for
Hutchinson it is a perfect control variate: only v^T M_t J_r v is estimated); only r is
differentiated by autograd. With no remainder the Heun map is linear and mode-diagonal and
log|det| = sum_p log|g(p)| in closed form (g the per-mode Heun gain).

Integrators (``integrator``, method "discrete" only for the last two): "heun" (above);
"exponential" (Gaussian part exact, E = sqrt(P_s / P_t), remainder held at the step's start:
:func:`exponential_step`); "implicit" (remainder at the step's end, explicit inverse:
:func:`implicit_step`). The change-of-variables density is that of the map only where the
map is injective; explicit steps of a confining remainder fold (tested), the implicit step
does not while the learned effective action is not too concave.

Closed-form Jacobians: an effective-action model without residual net (alone or inside a
GaussianExactScore) has dr/dphi = Circ(c) + diag(d) (:func:`remainder_jacobian`): no
vector-Jacobian products at all, an O(V) exact trace (method "exact" at any V) and dense
V x V step Jacobians for "discrete" up to V = MAX_STRUCTURED_VOLUME = 1024.

``discrete`` and ``exact`` need V = prod(N) <= 256 (N <= 16 in 2D); larger lattices raise
ValueError pointing to ``method="hutchinson"``. Cost per configuration and step: 2 score
evaluations plus 2 V (exact, discrete) or 2 n_probes (hutchinson) vector-Jacobian products.
Frozen modes (zero prior variance, Polchinski-type schemes with mu2 = 0) have no prior
density: pass ``prior_G`` (their terminal law is then the Gaussian of spectrum prior_G) or
use mu2 > 0.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from rgdist.lattice.geometry import Lattice
from rgdist.rg.schemes import Scheme

METHODS = ("discrete", "exact", "hutchinson")
INTEGRATORS = ("heun", "rk4", "split", "exponential", "implicit")
DISCRETE_ONLY = ("exponential", "implicit")
_QUAD_NODES = 32
PROBES = ("rademacher", "gaussian")
MAX_EXACT_VOLUME = 256
MAX_STRUCTURED_VOLUME = 1024

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- Gaussian density
def gaussian_log_density(phi: torch.Tensor, spectrum: torch.Tensor,
                         lattice: Lattice) -> torch.Tensor:
    """log N(phi; 0, C) per configuration, C circulant with eigenvalues ``spectrum`` (G2 units).

    log p = -1/(2V) sum_p |phi~(p)|^2 / S(p) - 1/2 sum_p log(2 pi S(p)); shape (B,).
    """
    lattice.check_field(phi)
    S = torch.as_tensor(spectrum).to(device=phi.device, dtype=torch.float64)
    if tuple(S.shape) != lattice.shape:
        raise ValueError(f"spectrum must have shape {lattice.shape}, got {tuple(S.shape)}")
    if not bool(torch.isfinite(S).all()) or not bool((S > 0).all()):
        raise ValueError("spectrum must be finite and > 0 at every momentum (a frozen mode "
                         "has no Gaussian density: give prior_G or use an IR mass mu2 > 0)")
    power = lattice.fft(phi.to(torch.float64)).abs().square()
    quad = (power / S).sum(dim=lattice.dims) / lattice.volume
    return (-0.5 * quad - 0.5 * torch.log(2 * math.pi * S).sum()).to(phi.dtype)


def prior_spectrum(scheme: Scheme, prior_G=None, device=None) -> torch.Tensor:
    """S_T = scheme.prior_spectrum(prior_G) (float64), checked to be > 0 at every momentum."""
    G = None if prior_G is None else torch.as_tensor(prior_G, dtype=torch.float64).cpu()
    S = scheme.prior_spectrum(G).to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(S).all()) or not bool((S > 0).all()):
        raise ValueError(
            f"the prior spectrum of scheme {scheme.name!r} vanishes on some mode (a frozen zero "
            "mode): pass prior_G (the data spectrum) so the terminal law has a density, or use "
            "mu2 > 0")
    return S


def prior_log_density(scheme: Scheme, phi_T: torch.Tensor, prior_G=None) -> torch.Tensor:
    """log p_T(phi_T) under the Gaussian prior of spectrum scheme.prior_spectrum(prior_G)."""
    return gaussian_log_density(phi_T, prior_spectrum(scheme, prior_G, phi_T.device),
                                scheme.lattice)


# --------------------------------------------------------------------------- scores and flow
class GaussianScore:
    """s(phi, t) = scheme.gaussian_score(phi, t, G) + remainder(phi, t)  (remainder None = 0).

    Written this way, the Gaussian part of the flow is handled in closed form by the
    likelihood code (see :class:`_Flow`); only ``remainder`` is differentiated. Callable like
    any score function, so rgdist.sample.solve can run it too.
    """

    def __init__(self, scheme: Scheme, G, remainder: ScoreFn | None = None,
                 remainder_jacobian: Callable | None = None):
        if not isinstance(scheme, Scheme):
            raise ValueError(f"scheme must be a rgdist.rg.Scheme, got {type(scheme).__name__}")
        G = torch.as_tensor(G, dtype=torch.float64)
        if tuple(G.shape) != scheme.lattice.shape or not bool((G >= 0).all()):
            raise ValueError(f"G must be a non-negative spectrum of shape {scheme.lattice.shape}")
        if remainder is not None and not callable(remainder):
            raise ValueError("remainder must be a callable (phi, t) -> tensor or None")
        if remainder_jacobian is not None and (remainder is None or not callable(remainder_jacobian)):
            raise ValueError("remainder_jacobian must be a callable (phi, t) -> (kernel, diag) "
                             "and needs a remainder")
        self.scheme, self.G, self.remainder = scheme, G, remainder
        self.remainder_jacobian = remainder_jacobian

    def __call__(self, phi: torch.Tensor, t) -> torch.Tensor:
        s = self.scheme.gaussian_score(phi, t, self.G.to(phi.device))
        if self.remainder is not None:
            s = s + self.remainder(phi, t).to(phi.dtype)
        return s


def same_scheme(a, b) -> bool:
    """Equal schemes: the same object, or the same class, lattice and parameters."""
    if a is b:
        return True
    return (isinstance(a, Scheme) and type(a) is type(b) and a.lattice == b.lattice
            and a.params() == b.params())


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
    flow = _Flow(score_fn, scheme)
    if differentiable:
        return flow.rem_trace is not None
    return flow.exact_trace


class _Flow:
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
        """(E, W) of the exponential step t -> s < t (per mode, see :func:`exponential_step`).

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


def exponential_step(flow: _Flow, x: torch.Tensor, t: float, s: float, max_rows: int = 8192,
                     with_jacobian: bool = True):
    """(y, J, log|det J|, sign det J) of the exponential step y = Phi(x) from t down to s.

    The linear (Gaussian) part of the flow is integrated exactly and the remainder is held at
    its value at (x, t):

        y~(p) = E(p) x~(p) + W(p) r~(x, t)(p),   E = exp(-int_s^t k),
        W = int_s^t exp(-int_s^u k) beta_u^2 / 2 du,

    with E = sqrt(P_s / P_t) when the score has a Gaussian part of spectrum G
    (P = A^2 G + Sigma; a Gaussian-data flow is then exact at any step count) and A_s/A_t
    otherwise. One remainder evaluation per step. Jacobian J = Circ(E) + Circ(W) dr/dx:
    closed form Circ(E + W c) + Circ(W) diag(d) for a structured remainder, V
    vector-Jacobian products otherwise; without a remainder log|det J| = sum_p log E(p).
    """
    B = x.shape[0]
    lat = flow.lat
    E, W = flow.exp_coefficients(t, s, x)
    if flow.rem is None:
        y = lat.ifft(lat.fft(x) * E)
        logabs = torch.log(E.abs()).sum().expand(B)
        return y, None, logabs, torch.sign(E).prod().expand(B)
    if not with_jacobian:
        with torch.no_grad():
            r = flow.remainder(x, t)
        return lat.ifft(lat.fft(x) * E + lat.fft(r) * W), None, None, None
    Wd = flow.circulant_single(W)
    if flow.rem_jac is not None:
        with torch.no_grad():
            r = flow.remainder(x, t)
            c, d = flow.remainder_jacobian(x, t)
            J = flow.circulant(E + W * c) + Wd * d.reshape(B, 1, -1)
    else:
        r, J_r = batched_jacobian(lambda z: flow.remainder(z, t), x, max_rows=max_rows)
        J = flow.circulant_single(E) + Wd @ J_r
    y = lat.ifft(lat.fft(x) * E + lat.fft(r) * W)
    sign, logabs = slogdet(J)
    return y.detach(), J.detach(), logabs.detach(), sign.detach()


def _implicit_matrix(flow: _Flow, y: torch.Tensor, s: float, W: torch.Tensor,
                     max_rows: int = 8192):
    """(r(y, s), I - Circ(W) dr/dy at y) for the implicit step (closed form when structured)."""
    B, V = y.shape[0], y[0].numel()
    Wd = flow.circulant_single(W)
    if flow.rem_jac is not None:
        with torch.no_grad():
            r = flow.remainder(y, s)
            c, d = flow.remainder_jacobian(y, s)
            Jm = flow.circulant(1 - W * c) - Wd * d.reshape(B, 1, -1)
        return r, Jm
    r, J_r = batched_jacobian(lambda z: flow.remainder(z, s), y, max_rows=max_rows)
    flow.jacobians += 1
    return r, torch.eye(V, dtype=y.dtype, device=y.device) - Wd @ J_r


def implicit_step(flow: _Flow, x: torch.Tensor, t: float, s: float, max_rows: int = 8192,
                  tol: float = 1e-11, max_iter: int = 50):
    """(y, None, log|det dy/dx|, sign) of the implicit exponential step from t down to s.

    The linear (Gaussian) part is integrated exactly (E, W as in :func:`exponential_step`)
    and the remainder is taken at the END point:

        y - ifft(W r~(y, s)) = ifft(E x~),    i.e.   x = ifft(E^-1 (y~ - W r~(y, s))).

    The inverse map is explicit (an exponential Euler step of the noising direction), so
    log-densities of given configurations need no iteration, and sampling solves for y by
    Newton's method (backtracking per configuration) from y = ifft(E x~). Why implicit: the
    explicit step x -> E x + W r(x) of a confining remainder (r ~ -c phi^3) folds for large
    |x| and its image is bounded, so target configurations beyond it get proposal density 0
    and exact MH / reweighting lose their support; here dx/dy = E^-1 (I - Circ(W) dr/dy) is
    positive definite whenever the effective action's Hessian is bounded below by
    -1 / (2 max W), and the map is then a bijection of the whole space.
    log|det dy/dx| = sum_p log E(p) - log|det(I - Circ(W) dr/dy)|.
    """
    B = x.shape[0]
    lat = flow.lat
    E, W = flow.exp_coefficients(t, s, x)
    logE = torch.log(E.abs()).sum()
    b = lat.ifft(lat.fft(x) * E)
    if flow.rem is None:
        return b, None, logE.expand(B), torch.sign(E).prod().expand(B)
    y = b.clone()
    scale = 1.0 + b.abs().flatten(1).amax(1)

    def residual(z):
        r, Jm = _implicit_matrix(flow, z, s, W, max_rows)
        return z - lat.ifft(lat.fft(r) * W) - b, Jm

    F, Jm = residual(y)
    norm = F.flatten(1).abs().amax(1)
    for _ in range(max_iter):
        if bool((norm <= tol * scale).all()):
            break
        delta = solve(Jm, F.reshape(B, -1, 1)).reshape(y.shape)
        alpha = torch.ones(B, dtype=y.dtype, device=y.device)
        view = (-1,) + (1,) * (y.dim() - 1)
        for _ in range(30):  # backtracking: accept per configuration once |F| decreases
            y_try = y - alpha.view(view) * delta
            F_try, J_try = residual(y_try)
            n_try = F_try.flatten(1).abs().amax(1)
            ok = (n_try < norm) | (norm <= tol * scale)
            if bool(ok.all()):
                break
            alpha = torch.where(ok, alpha, 0.5 * alpha)
        y = torch.where(ok.view(view), y_try, y)
        F = torch.where(ok.view(view), F_try, F)
        Jm = torch.where(ok.view(-1, 1, 1), J_try, Jm)
        norm = torch.where(ok, n_try, norm)
    else:
        if not bool((norm <= tol * scale).all()):
            raise FloatingPointError(
                f"the implicit step {t} -> {s} did not converge in {max_iter} Newton iterations "
                f"(residual {float(norm.max()):.3g}): the effective action is too concave for "
                "this step; use more steps")
    sign, logabs_m = slogdet(Jm)
    return y.detach(), None, (logE - logabs_m).detach(), (torch.sign(E).prod() * sign).detach()


def _implicit_inverse(flow: _Flow, y: torch.Tensor, t: float, s: float, max_rows: int = 8192):
    """(x, log|det dy/dx|) of the implicit step t -> s: the explicit inverse map."""
    lat = flow.lat
    E, W = flow.exp_coefficients(t, s, y)
    logE = torch.log(E.abs()).sum()
    if flow.rem is None:
        return lat.ifft(lat.fft(y) / E), logE.expand(y.shape[0])
    r, Jm = _implicit_matrix(flow, y, s, W, max_rows)
    x = lat.ifft((lat.fft(y) - W * lat.fft(r)) / E)
    _, logabs_m = slogdet(Jm)
    return x.detach(), (logE - logabs_m).detach()


def slogdet(J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, log|det|) of a batch of square matrices (..., V, V).

    On CPU the matrices are factorized one at a time: torch's batched LU on CPU (MKL
    getrf_batch) was measured to stall with "DLASWP parameter 6" errors for V >= ~200 and
    batch >= 2 (torch 2.13); one at a time it costs ~2 ms at V = 256.
    """
    if J.dim() < 3 or J.device.type != "cpu":
        return torch.linalg.slogdet(J)
    flat = J.reshape(-1, *J.shape[-2:])
    parts = [torch.linalg.slogdet(a) for a in flat]
    sign = torch.stack([p.sign for p in parts]).reshape(J.shape[:-2])
    logabs = torch.stack([p.logabsdet for p in parts]).reshape(J.shape[:-2])
    return sign, logabs


def solve(J: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.linalg.solve(J, b) for batches; one system at a time on CPU (see :func:`slogdet`)."""
    if J.dim() < 3 or J.device.type != "cpu":
        return torch.linalg.solve(J, b)
    flat_J = J.reshape(-1, *J.shape[-2:])
    flat_b = b.reshape(-1, *b.shape[-2:])
    out = torch.stack([torch.linalg.solve(a, c) for a, c in zip(flat_J, flat_b)])
    return out.reshape(b.shape)


def heun_step(flow: Callable, phi: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """One reverse Heun step t -> s < t of dphi/dt = f (Euler when s == 0), as solvers.heun_ode."""
    h = t - s
    f1 = flow(phi, t)
    pred = phi - h * f1
    if s == 0.0:
        return pred
    return phi - 0.5 * h * (f1 + flow(pred, s))


def _heun_gain(flow: _Flow, t: float, s: float, like: torch.Tensor) -> torch.Tensor:
    """Per-mode gain g(p) of a Heun step of the linear flow f = ifft(k fft phi)."""
    h = t - s
    k_t = flow.kernels(t, like)[0]
    if s == 0.0:
        return 1 - h * k_t
    k_s = flow.kernels(s, like)[0]
    return 1 - 0.5 * h * (k_t + k_s * (1 - h * k_t))


def discrete_step(flow: _Flow, x: torch.Tensor, t: float, s: float, max_rows: int = 8192):
    """(y, J, log|det J|, sign det J) of the Heun step y = Phi(x), J = dPhi/dx.

    J = I - h/2 (J_1 + J_2 (I - h J_1)), J_1 = f'(x, t), J_2 = f'(x - h f(x, t), s)
    (J = I - h J_1 on an Euler step to s = 0). Without a remainder the step is linear and
    mode-diagonal: log|det J| = sum_p log|g(p)| and J is returned as None.
    """
    B = x.shape[0]
    h = t - s
    if flow.rem is None:
        g = _heun_gain(flow, t, s, x)
        y = flow.lat.ifft(flow.lat.fft(x) * g)
        logabs = torch.log(g.abs()).sum().expand(B)
        sign = torch.sign(g).prod().expand(B)
        return y, None, logabs, sign
    V = x[0].numel()
    eye = torch.eye(V, dtype=x.dtype, device=x.device)
    f1, J1 = flow.with_jacobian(x, t, max_rows)
    pred = x - h * f1
    if s == 0.0:
        y, J = pred, eye - h * J1
    else:
        f2, J2 = flow.with_jacobian(pred, s, max_rows)
        y = x - 0.5 * h * (f1 + f2)
        J = eye - 0.5 * h * (J1 + J2 - h * (J2 @ J1))
    sign, logabs = slogdet(J)
    return y.detach(), J.detach(), logabs.detach(), sign.detach()


# --------------------------------------------------------------------------- Jacobians
def _check_volume(lattice: Lattice, method: str, structured: bool = False,
                  traced: bool = False) -> None:
    """Volume limits: a generic network's Jacobian costs V vector-Jacobian products per
    evaluation (V <= MAX_EXACT_VOLUME for "exact" and "discrete"); a structured Jacobian
    (closed form) has an O(V) exact trace (any V) and a dense V x V determinant for
    "discrete" (V <= MAX_STRUCTURED_VOLUME); an exact-trace model (``traced``) has an exact
    O(V K) trace (any V for "exact") but its full Jacobian ("discrete") is autograd's."""
    V = lattice.volume
    if traced and method in ("exact", "hutchinson"):
        return
    if structured:
        if method == "discrete" and V > MAX_STRUCTURED_VOLUME:
            raise ValueError(
                f"method='discrete' takes the determinant of a dense V x V step Jacobian and is "
                f"allowed for V <= {MAX_STRUCTURED_VOLUME}; this lattice has V = {V} "
                f"({lattice.shape}): use method=\"exact\" (closed-form divergence, any V) or "
                "method=\"hutchinson\"")
        return
    if method in ("discrete", "exact") and V > MAX_EXACT_VOLUME:
        raise ValueError(
            f"method={method!r} forms the full V x V Jacobian and is allowed only for volume "
            f"V <= {MAX_EXACT_VOLUME} (N <= 16 in 2D); this lattice has V = {V} "
            f"({lattice.shape}): use method=\"hutchinson\" (stochastic trace estimator) instead")


def batched_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                     max_rows: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), J) with J[b, i, j] = d fn(x)[b, i] / d x[b, j] (sites flattened), shape (B, V, V).

    ``fn`` must act on each configuration separately (no coupling across the batch). J is
    built from V one-hot vector-Jacobian products run as batched backward passes, at most
    ``max_rows`` (configuration, basis vector) pairs at a time.
    """
    B, V = x.shape[0], x[0].numel()
    chunk = max(1, min(V, max_rows // max(B, 1)))
    eye = torch.eye(V, dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        y = fn(xg)
        rows = []
        for start in range(0, V, chunk):
            c = min(chunk, V - start)
            E = eye[start:start + c].reshape(c, 1, *x.shape[1:]).expand(c, *x.shape)
            (g,) = torch.autograd.grad(y, xg, E, retain_graph=start + c < V,
                                       is_grads_batched=True)
            rows.append(g.reshape(c, B, V))
    return y.detach(), torch.cat(rows).permute(1, 0, 2)


def _probes(kind: str, n_probes: int, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    shape = (n_probes, *x.shape)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return (2 * bits - 1).to(x.dtype)


class _Divergence:
    """div f at (x, t): returns (f, div, var), var the variance of the estimate (0 if exact).

    div f = tr K_t + tr(M_t J_r): the first term in closed form (sum_p k_t(p)); the second
    exactly ((M * J_r).sum, M symmetric) or by Hutchinson, v^T M J_r v = (M v)^T J_r v, one
    vector-Jacobian product of r per probe.
    """

    def __init__(self, flow: _Flow, method: str, n_probes: int, probe: str, generator,
                 max_rows: int):
        self.flow, self.method, self.n_probes, self.probe = flow, method, n_probes, probe
        self.generator, self.max_rows = generator, max_rows
        self.vjp = 0

    def __call__(self, x: torch.Tensor, t: float):
        flow = self.flow
        k, m = flow.kernels(t, x)
        tr_k = k.sum().to(torch.float64).expand(x.shape[0])
        if flow.rem is None:
            return flow(x, t), tr_k, torch.zeros_like(tr_k)
        if flow.rem_jac is not None:  # closed form, whatever the method
            with torch.no_grad():
                r = flow.remainder(x, t)
                c, d = flow.remainder_jacobian(x, t)
            dims = tuple(range(1, x.dim()))
            div = ((k + m * c).sum(dims) + m.mean() * d.sum(dims)).to(torch.float64)
            return flow.combine(x, r, t), div, torch.zeros_like(div)
        if flow.rem_trace is not None:  # exact-trace model: O(V K), whatever the method
            tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
            flow.nfe += 1
            r, tr = flow.rem_trace(x, tb, m)
            div = tr_k + tr.to(torch.float64)
            return flow.combine(x, r.to(x.dtype), t), div, torch.zeros_like(div)
        if self.method in ("exact", "discrete"):
            r, J_r = batched_jacobian(lambda z: flow.remainder(z, t), x, max_rows=self.max_rows)
            self.vjp += x[0].numel()
            M = flow.dense(t, x)[1]
            div = tr_k + (M * J_r).sum((1, 2)).to(torch.float64)
            return flow.combine(x, r, t), div, torch.zeros_like(div)
        v = _probes(self.probe, self.n_probes, x, self.generator)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            r = flow.remainder(xg, t)
            (g,) = torch.autograd.grad(r, xg, flow.lat.filter(v, m), is_grads_batched=True)
        self.vjp += self.n_probes
        est = (v * g).sum(tuple(range(2, v.dim()))).to(torch.float64)      # (P, B)
        div = tr_k + est.mean(0)
        if self.n_probes > 1:
            var = est.var(0, unbiased=True) / self.n_probes
        else:
            var = torch.full_like(div, float("nan"))
        return flow.combine(x, r.detach(), t), div.detach(), var.detach()


# --------------------------------------------------------------------------- validation
def _check_args(scheme, method, n_probes, probe, generator_needed, generator,
                integrator="heun"):
    if not isinstance(scheme, Scheme):
        raise ValueError(f"scheme must be a rgdist.rg.Scheme, got {type(scheme).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    if integrator in DISCRETE_ONLY and method != "discrete":
        raise ValueError(f"integrator={integrator!r} has only the exact density of its discrete "
                         f"map: use method='discrete' (got method={method!r}), or "
                         "integrator='heun' or 'rk4' for the continuous-time methods")
    if integrator == "split" and method == "hutchinson":
        raise ValueError("integrator='split' (linear part exact, channels by RK4) has the "
                         "exact-trace density (method='exact') or the exact density of its "
                         "discrete map (method='discrete', V <= 256); got method='hutchinson'")
    if integrator == "rk4" and method == "discrete":
        raise ValueError("integrator='rk4' integrates the continuous-time density (method "
                         "'exact' or 'hutchinson'); method='discrete' needs integrator 'heun', "
                         "'exponential' or 'implicit'")
    if isinstance(n_probes, bool) or not hasattr(n_probes, "__index__") or int(n_probes) < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if generator_needed and not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (the prior and Hutchinson probes "
                         f"draw from it), got {type(generator).__name__}")
    return int(n_probes)


def _check_batch_size(batch_size, n: int) -> int:
    if batch_size is None:
        return n
    if isinstance(batch_size, bool) or not hasattr(batch_size, "__index__") or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    return int(batch_size)


# --------------------------------------------------------------------------- sampling
def _step_evaluations(integrator: str, s: float) -> int:
    """Remainder evaluations (hence Jacobians) of one discrete step ending at s."""
    return 1 if integrator == "exponential" or s == 0.0 else 2


def rk4_step(div: Callable, phi: torch.Tensor, a: float, b: float):
    """One classical Runge-Kutta step of the probability-flow ODE augmented with the
    log-density, from time a to time b (either direction): phi_b = phi + (b - a)/6 (k1 + 2 k2
    + 2 k3 + k4), and the integral of div f over the interval, |b - a|/6 (d1 + 2 d2 + 2 d3 +
    d4) (fourth order). ``div(x, t) -> (f, div f, var)``. Returns (phi_b, integral, var)."""
    dt = b - a
    mid = a + 0.5 * dt
    f1, d1, v1 = div(phi, a)
    f2, d2, v2 = div(phi + 0.5 * dt * f1, mid)
    f3, d3, v3 = div(phi + 0.5 * dt * f2, mid)
    f4, d4, v4 = div(phi + dt * f3, b)
    w = abs(dt) / 6
    out = phi + (dt / 6) * (f1 + 2 * f2 + 2 * f3 + f4)
    return out, w * (d1 + 2 * d2 + 2 * d3 + d4), w * w * (v1 + 4 * v2 + 4 * v3 + v4)


_SPLIT_NODES, _SPLIT_WEIGHTS = np.polynomial.legendre.leggauss(4)


class _SplitFlow:
    """The flow of an exact-trace model split as f = C_t phi (linear, mode-diagonal) + f_N.

    C_t(p) = k_t(p) - m_t(p) g_t h_t(p) with k, m the scheme kernels of :class:`_Flow`, h_t the
    model's linear filter and g_t its scale (residual_scale inside a GaussianExactScore, else
    1); f_N = ifft(m_t fft(g_t n(phi, t))) with n the nonlinear channels, whose weighted trace
    the model gives exactly.
    """

    def __init__(self, flow: _Flow, score_fn):
        self.flow, self.lat = flow, flow.lat
        if flow.G is not None and not isinstance(score_fn, GaussianScore):
            self.net, self.scale = score_fn.net, score_fn.residual_scale
        else:
            self.net, self.scale = score_fn, None
        if not callable(getattr(self.net, "linear_filter", None)):
            raise ValueError("integrator='split' needs a model with linear_filter() and "
                             "nonlinear_divergence() (model 'trace')")
        self.has_channels = (getattr(self.net, "channels", 0)
                             + getattr(self.net, "global_channels", 0)) > 0

    def _g(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            return torch.ones(t.shape[0], dtype=like.dtype, device=like.device)
        return self.scale(t.to(like.dtype)).to(like.dtype)

    def coef(self, u: float, like: torch.Tensor) -> torch.Tensor:
        k, m = self.flow.kernels(u, like)
        tt = torch.tensor([u], dtype=like.dtype, device=like.device)
        h = self.net.linear_filter(tt)[0].to(like.dtype)
        return k - m * self._g(tt, like)[0] * h

    def propagator(self, a: float, b: float, like: torch.Tensor):
        """(E, int_b^a C du summed over p) for the exact linear flow from a down to b < a."""
        half, mid = 0.5 * (a - b), 0.5 * (a + b)
        integral = 0.0
        for x, w in zip(_SPLIT_NODES.tolist(), _SPLIT_WEIGHTS.tolist()):
            integral = integral + (half * w) * self.coef(mid + half * x, like)
        return torch.exp(-integral), integral.sum()

    def nonlinear(self, x: torch.Tensor, u: float):
        k, m = self.flow.kernels(u, x)
        tb = torch.full((x.shape[0],), u, dtype=x.dtype, device=x.device)
        self.flow.nfe += 1
        n, tr = self.net.nonlinear_divergence(x, tb, m)
        g = self._g(tb, x)
        f = self.lat.ifft(m * self.lat.fft(g.reshape((-1,) + (1,) * self.lat.d) * n))
        return f, (g * tr).to(torch.float64), torch.zeros_like(tr, dtype=torch.float64)

    def step(self, phi: torch.Tensor, t: float, s: float):
        """Strang splitting t -> s < t: exact linear half step, RK4 on the channels over the
        whole step, exact linear half step. Returns (phi_s, integral of div f): exact for the
        linear part (the map is E, log|det| = sum_p int C), RK4 for the channels."""
        mid = 0.5 * (t + s)
        E1, l1 = self.propagator(t, mid, phi)
        phi = self.lat.ifft(E1 * self.lat.fft(phi))
        dl = l1.to(torch.float64).expand(phi.shape[0])
        if self.has_channels:
            phi, dn, _ = rk4_step(self.nonlinear, phi, t, s)
            dl = dl + dn
        E2, l2 = self.propagator(mid, s, phi)
        phi = self.lat.ifft(E2 * self.lat.fft(phi))
        return phi, dl + l2.to(torch.float64)


def flow_with_logq(score_fn: ScoreFn, scheme: Scheme, phi_T: torch.Tensor, times, *,
                   integrator: str = "rk4", checkpoint: bool = False):
    """Differentiable probability-flow path with the EXACT divergence (for training).

    Integrates phi_T (B, *shape) down the decreasing grid ``times`` with ``integrator``
    ("rk4" or "heun"); returns (phi, delta) with delta = int div f dt along the path, so
    log q(phi) = log p_T(phi_T) + delta. The score must have an O(V) exact trace (a
    rgdist.models.TraceScore, alone or inside GaussianExactScore, or a structured model);
    gradients flow to its parameters. ``checkpoint=True`` recomputes each step in the
    backward pass (torch.utils.checkpoint): memory O(one step) instead of O(steps).
    """
    if integrator not in ("rk4", "heun", "split"):
        raise ValueError(f"integrator must be 'rk4', 'heun' or 'split', got {integrator!r}")
    flow = _Flow(score_fn, scheme)
    if flow.rem is not None and flow.rem_trace is None:
        raise ValueError("flow_with_logq needs a score model with an exact trace (model "
                         "'trace', alone or with gaussian_exact); this model has none")
    div = _Divergence(flow, "exact", 1, "rademacher", None, 8192)
    split = _SplitFlow(flow, score_fn) if integrator == "split" else None
    grid = [float(x) for x in torch.as_tensor(times, dtype=torch.float64).tolist()]

    def heun(x, a, b):
        f1, d1, _ = div(x, a)
        f2, d2, _ = div(x + (b - a) * f1, b)
        return x + 0.5 * (b - a) * (f1 + f2), 0.5 * abs(b - a) * (d1 + d2)

    def step(x, a, b):
        if split is not None:
            return split.step(x, a, b)
        if integrator == "rk4":
            y, dl, _ = rk4_step(div, x, a, b)
            return y, dl
        return heun(x, a, b)

    phi = phi_T
    delta = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
    for a, b in zip(grid[:-1], grid[1:]):
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as ckpt
            phi, dl = ckpt(step, phi, a, b, use_reentrant=False)
        else:
            phi, dl = step(phi, a, b)
        delta = delta + dl
    return phi, delta


def flow_score(flow: _Flow):
    return flow.score_fn


def _sample_chunk(flow: _Flow, div: _Divergence, phi, grid, method, integrator="heun"):
    """Integrate T -> t_min from phi (= phi_T); returns (phi, log-density change, var, #folds)."""
    delta = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
    var = torch.zeros_like(delta)
    n_bad = 0
    if integrator == "split":
        split = _SplitFlow(flow, flow_score(flow))
        for t, s in zip(grid[:-1], grid[1:]):
            if method == "discrete":  # exact density of the map run: its full Jacobian
                y, J = batched_jacobian(lambda z: split.step(z, t, s)[0], phi,
                                        max_rows=div.max_rows)
                sign, logabs = slogdet(J)
                div.vjp += phi[0].numel()
                n_bad += int((sign <= 0).sum())
                phi, delta = y, delta - logabs.to(torch.float64)
                continue
            with torch.no_grad():
                phi, dl = split.step(phi, t, s)
            delta = delta + dl
        return phi.detach(), delta.detach(), var, n_bad
    if integrator == "rk4":
        with torch.no_grad():  # (Hutchinson probes enable grad for their own products)
            for t, s in zip(grid[:-1], grid[1:]):
                phi, dl, dv = rk4_step(div, phi, t, s)
                delta, var = delta + dl, var + dv
        return phi.detach(), delta.detach(), var.detach(), 0
    step = {"exponential": exponential_step, "implicit": implicit_step}.get(integrator,
                                                                           discrete_step)
    for t, s in zip(grid[:-1], grid[1:]):
        if method == "discrete":
            j0 = flow.jacobians
            phi, _, logabs, sign = step(flow, phi, t, s, div.max_rows)
            if integrator == "implicit":
                div.vjp += phi[0].numel() * (flow.jacobians - j0)
            elif not flow.structured:
                div.vjp += phi[0].numel() * _step_evaluations(integrator, s)
            n_bad += int((sign <= 0).sum())
            delta = delta - logabs.to(torch.float64)
            continue
        h = t - s
        f1, d1, v1 = div(phi, t)
        pred = phi - h * f1
        if s == 0.0:
            delta, var = delta + h * d1, var + h * h * v1
            phi = pred
            continue
        f2, d2, v2 = div(pred, s)
        delta = delta + 0.5 * h * (d1 + d2)
        var = var + 0.25 * h * h * (v1 + v2)
        phi = phi - 0.5 * h * (f1 + f2)
    return phi, delta, var, n_bad


def ode_sample_with_logq(score_fn: ScoreFn, scheme: Scheme, n: int, *, n_steps: int,
                         generator: torch.Generator, method: str = "exact", n_probes: int = 1,
                         t_min: float | None = None, grid: str = "uniform", prior_G=None,
                         probe: str = "rademacher", batch_size: int | None = None,
                         max_rows: int = 8192, dtype=torch.float64, return_info: bool = False,
                         integrator: str = "heun"):
    """Draw ``n`` configurations with the probability-flow sampler AND their log-density.

    phi_T ~ N(0, S_T) (S_T = scheme.prior_spectrum(prior_G), drawn with ``generator`` on its
    device), then n_steps Heun steps on scheme.time_grid(n_steps, grid, t_min) down to t_min
    (no final denoising). log_q = log p_T(phi_T) + (log-density change by ``method``, see the
    module docstring); with method="discrete" it is the exact density of the returned phi
    under this sampler. A :class:`GaussianScore` or GaussianExactScore built on ``scheme``
    has its Gaussian part treated in closed form (only the remainder is differentiated).
    ``batch_size`` splits the work (the draws then depend on it).

    Returns ``(phi, log_q)``; with ``return_info=True`` also a dict: ``log_q_var`` (B,)
    (Hutchinson estimator variance; 0 otherwise; nan with n_probes = 1), ``log_prior`` (B,),
    ``phi_T``, ``nfe`` (score or remainder evaluations per configuration), ``vjp``
    (vector-Jacobian products per configuration), ``n_nonpositive_det`` (discrete steps whose
    Jacobian determinant was <= 0, i.e. the map folded; 0 for a good sampler), ``times``.
    """
    n_probes = _check_args(scheme, method, n_probes, probe, True, generator, integrator)
    if isinstance(n, bool) or not hasattr(n, "__index__") or int(n) < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    batch_size = _check_batch_size(batch_size, n)
    grid_t = scheme.time_grid(n_steps, kind=grid, t_min=t_min).tolist()
    lat = scheme.lattice
    spec = prior_spectrum(scheme, prior_G, generator.device)
    flow = _Flow(score_fn, scheme)
    _check_volume(lat, method, flow.structured, flow.rem_trace is not None)
    div = _Divergence(flow, method, n_probes, probe, generator, max_rows)
    outs: dict[str, list] = {"phi": [], "log_q": [], "var": [], "prior": [], "phi_T": []}
    n_bad, n_chunks = 0, 0
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        phi_T = lat.colored_noise(spec, size, generator).to(dtype)
        log_p = gaussian_log_density(phi_T, spec, lat).to(torch.float64)
        phi, delta, var, bad = _sample_chunk(flow, div, phi_T, grid_t, method, integrator)
        n_bad += bad
        n_chunks += 1
        for key, val in (("phi", phi), ("log_q", log_p + delta), ("var", var),
                         ("prior", log_p), ("phi_T", phi_T)):
            outs[key].append(val.detach())
    phi, log_q = torch.cat(outs["phi"]), torch.cat(outs["log_q"])
    if not return_info:
        return phi, log_q
    info = {"log_q_var": torch.cat(outs["var"]), "log_prior": torch.cat(outs["prior"]),
            "phi_T": torch.cat(outs["phi_T"]), "nfe": flow.nfe // n_chunks,
            "vjp": div.vjp // n_chunks, "n_nonpositive_det": n_bad,
            "times": torch.tensor(grid_t, dtype=torch.float64), "method": method,
            "integrator": integrator}
    return phi, log_q, info


# --------------------------------------------------------------------------- likelihood of data
def _invert_step(flow: _Flow, y, t, s, max_rows, tol, max_iter, integrator="heun"):
    """Solve Phi(x) = y for the step t -> s; returns (x, log|det dPhi/dx| at x, iterations).

    Linear flow: x = ifft(fft(y) / g) (g the Heun gain or the exponential propagator E).
    Otherwise Newton's method from an explicit guess (Heun: x = y + h f(y, .); exponential:
    x = E^-1 (y - W r(y, t))), using the step Jacobian of :func:`discrete_step` or
    :func:`exponential_step`.
    """
    lat = flow.lat
    if integrator == "implicit":  # explicit inverse: no iteration
        x, logabs = _implicit_inverse(flow, y, t, s, max_rows)
        return x, logabs, 0
    if integrator == "exponential":
        E, W = flow.exp_coefficients(t, s, y)
        if flow.rem is None:
            x = lat.ifft(lat.fft(y) / E)
            return x, torch.log(E.abs()).sum().expand(y.shape[0]), 0
        with torch.no_grad():
            x = lat.ifft((lat.fft(y) - W * lat.fft(flow.remainder(y, t))) / E)
        step = exponential_step
    else:
        if flow.rem is None:
            g = _heun_gain(flow, t, s, y)
            x = lat.ifft(lat.fft(y) / g)
            return x, torch.log(g.abs()).sum().expand(y.shape[0]), 0
        with torch.no_grad():
            x = y + (t - s) * flow(y, s if s > 0 else t)
        step = discrete_step
    scale = 1.0 + y.abs().flatten(1).amax(1)
    for it in range(1, max_iter + 1):
        Phi, J, logabs, _ = step(flow, x, t, s, max_rows)
        r = (Phi - y).flatten(1)
        if bool((r.abs().amax(1) <= tol * scale).all()):
            return x, logabs, it
        x = x - solve(J, r.unsqueeze(-1)).squeeze(-1).reshape(x.shape)
    raise FloatingPointError(
        f"Newton inversion of the {integrator} step {t} -> {s} did not converge in {max_iter} "
        f"iterations (residual {float(r.abs().max()):.3g}); the discrete map may not be "
        "invertible here: use more steps or method='exact'")


def ode_log_likelihood(score_fn: ScoreFn, scheme: Scheme, phi0: torch.Tensor, *, n_steps: int,
                       method: str = "exact", n_probes: int = 1, t_min: float | None = None,
                       grid: str = "uniform", prior_G=None, probe: str = "rademacher",
                       generator: torch.Generator | None = None, max_rows: int = 8192,
                       newton_tol: float = 1e-11, newton_max_iter: int = 30,
                       return_info: bool = False, integrator: str = "heun"):
    """Model log-density at t_min of given configurations ``phi0`` (B, *lattice.shape).

    exact / hutchinson: integrate the probability-flow ODE forward, t_min -> T, with Heun on
    the reversed grid; log q(phi0) = log p_T(phi_T) + int_{t_min}^T div f dt (trapezoid rule
    along the Heun path). discrete: invert each reverse Heun step (Newton; exactly for a
    linear flow) and sum -log|det| of the step Jacobians: the exact density of the sampler
    of :func:`ode_sample_with_logq` with the same grid (the map must be invertible).
    ``generator`` is needed only for Hutchinson probes. Returns log_q (B,) or, with
    ``return_info``, (log_q, info): ``log_q_var``, ``phi_T``, ``log_prior``, ``nfe``,
    ``vjp`` (per configuration) and ``newton_iterations`` (the most any step needed).
    """
    n_probes = _check_args(scheme, method, n_probes, probe, method == "hutchinson", generator,
                           integrator)
    lat = scheme.lattice
    lat.check_field(phi0, "phi0")
    grid_t = scheme.time_grid(n_steps, kind=grid, t_min=t_min).tolist()
    flow = _Flow(score_fn, scheme)
    _check_volume(lat, method, flow.structured, flow.rem_trace is not None)
    div = _Divergence(flow, method, n_probes, probe, generator, max_rows)
    phi = phi0.detach()
    delta = torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)
    var = torch.zeros_like(delta)
    iters = 0
    if method == "discrete":
        for t, s in zip(reversed(grid_t[:-1]), reversed(grid_t[1:])):
            j0 = flow.jacobians
            phi, logabs, it = _invert_step(flow, phi, t, s, max_rows, newton_tol, newton_max_iter,
                                           integrator)
            iters = max(iters, it)
            if integrator == "implicit":
                div.vjp += phi[0].numel() * (flow.jacobians - j0)
            elif not flow.structured:
                div.vjp += it * phi[0].numel() * _step_evaluations(integrator, s)
            delta = delta - logabs.to(torch.float64)
    elif integrator == "rk4":
        up = list(reversed(grid_t))
        with torch.no_grad():
            for t, u in zip(up[:-1], up[1:]):
                phi, dl, dv = rk4_step(div, phi, t, u)
                delta, var = delta + dl, var + dv
    else:
        up = list(reversed(grid_t))
        for t, u in zip(up[:-1], up[1:]):
            h = u - t
            f1, d1, v1 = div(phi, t)
            pred = phi + h * f1
            f2, d2, v2 = div(pred, u)
            delta = delta + 0.5 * h * (d1 + d2)
            var = var + 0.25 * h * h * (v1 + v2)
            phi = phi + 0.5 * h * (f1 + f2)
    # a configuration whose preimage overflowed (the inverse of a confining flow grows
    # super-exponentially far out) has a prior density that underflows: q = 0 to float range
    lost = ~torch.isfinite(phi).flatten(1).all(1)
    log_prior = prior_log_density(scheme, torch.where(lost.view(-1, *(1,) * lat.d), 0.0, phi),
                                  prior_G).to(torch.float64)
    lost = lost | (log_prior == -math.inf)  # |log|det|| grows only like log |phi|
    log_prior = torch.where(lost, -math.inf, log_prior)
    log_q = torch.where(lost, -math.inf, log_prior + delta)
    if not return_info:
        return log_q
    return log_q, {"log_q_var": var, "phi_T": phi, "log_prior": log_prior, "nfe": flow.nfe,
                   "vjp": div.vjp, "newton_iterations": iters, "method": method,
                   "integrator": integrator}
