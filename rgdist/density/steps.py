"""Time steps of the probability-flow sampler, their step Jacobians and their inverses.

Steps run from t down to s < t on the grid ``scheme.time_grid(n_steps, grid, t_min)``
(h = t - s). Integrators (``integrator``; the density methods are in rgdist.density.density):

* "heun": Heun's method, the one step :func:`rgdist.sample.solvers.heun_step` that solver
  "heun_ode" (``denoise=False``) runs too (Euler on a last step that ends at t = 0):
  :func:`augmented_heun_step` on the ODE augmented with the log-density (trapezoid rule for
  int div f dt), :func:`discrete_step` for the step map with its Jacobian
  J = I - h/2 (J_1 + J_2 (I - h J_1)).
* "rk4": classical Runge-Kutta on the augmented ODE (:func:`rk4_step`; continuous-time
  densities only).
* "exponential": Gaussian part exact, E = sqrt(P_s / P_t), remainder held at the step's start
  (:func:`exponential_step`).
* "implicit": Gaussian part exact, remainder at the step's end, with an explicit inverse
  (:func:`implicit_step`, :func:`implicit_inverse`).
* "split": Strang splitting of an exact-trace model, linear part exact and channels by RK4
  (:class:`SplitFlow`).

The change-of-variables density is that of the map only where the map is injective; explicit
steps of a confining remainder fold (tested), the implicit step does not while the learned
effective action is not too concave. :func:`invert_step` solves Phi(x) = y for a step (Newton
from an explicit guess; the implicit step's inverse is explicit), for the exact density of
given configurations.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from rgdist.density.divergence import batched_jacobian, slogdet, solve
from rgdist.density.field import FlowField
from rgdist.density.prior import GaussianScore
from rgdist.sample.solvers import heun_step

_SPLIT_NODES, _SPLIT_WEIGHTS = np.polynomial.legendre.leggauss(4)


def augmented_heun_step(div: Callable, phi: torch.Tensor, t: float, s: float, *,
                        euler_to_zero: bool = True):
    """One Heun step (:func:`rgdist.sample.solvers.heun_step`) of the probability-flow ODE
    augmented with the log-density, from time t to time s (either direction): phi_s and the
    trapezoid rule for the integral of div f over the interval, |h|/2 (d_t + d_s) (|h| d_t on
    an Euler step), with its variance. ``div(x, t) -> (f, div f, var)``. Returns
    (phi_s, integral, var)."""
    def field(x, u):
        f, d, v = div(x, u)
        return f, (d, v)

    y, (d1, v1), end = heun_step(field, phi, t, s, euler_to_zero=euler_to_zero)
    h = abs(t - s)
    if end is None:
        return y, h * d1, h * h * v1
    d2, v2 = end
    return y, 0.5 * h * (d1 + d2), 0.25 * h * h * (v1 + v2)


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


def _heun_gain(flow: FlowField, t: float, s: float, like: torch.Tensor) -> torch.Tensor:
    """Per-mode gain g(p) of a Heun step of the linear flow f = ifft(k fft phi)."""
    h = t - s
    k_t = flow.kernels(t, like)[0]
    if s == 0.0:
        return 1 - h * k_t
    k_s = flow.kernels(s, like)[0]
    return 1 - 0.5 * h * (k_t + k_s * (1 - h * k_t))


def discrete_step(flow: FlowField, x: torch.Tensor, t: float, s: float, max_rows: int = 8192):
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
    y, J1, J2 = heun_step(lambda z, u: flow.with_jacobian(z, u, max_rows), x, t, s)
    if J2 is None:  # Euler step to s = 0
        J = eye - h * J1
    else:
        J = eye - 0.5 * h * (J1 + J2 - h * (J2 @ J1))
    sign, logabs = slogdet(J)
    return y.detach(), J.detach(), logabs.detach(), sign.detach()


def exponential_step(flow: FlowField, x: torch.Tensor, t: float, s: float, max_rows: int = 8192,
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


def _implicit_matrix(flow: FlowField, y: torch.Tensor, s: float, W: torch.Tensor,
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


def implicit_step(flow: FlowField, x: torch.Tensor, t: float, s: float, max_rows: int = 8192,
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


def implicit_inverse(flow: FlowField, y: torch.Tensor, t: float, s: float, max_rows: int = 8192):
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


def invert_step(flow: FlowField, y, t, s, max_rows, tol, max_iter, integrator="heun"):
    """Solve Phi(x) = y for the step t -> s; returns (x, log|det dPhi/dx| at x, iterations).

    Linear flow: x = ifft(fft(y) / g) (g the Heun gain or the exponential propagator E).
    Otherwise Newton's method from an explicit guess (Heun: x = y + h f(y, .); exponential:
    x = E^-1 (y - W r(y, t))), using the step Jacobian of :func:`discrete_step` or
    :func:`exponential_step`.
    """
    lat = flow.lat
    if integrator == "implicit":  # explicit inverse: no iteration
        x, logabs = implicit_inverse(flow, y, t, s, max_rows)
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
        "invertible here: use more steps or method='trace'")


class SplitFlow:
    """The flow of an exact-trace model split as f = C_t phi (linear, mode-diagonal) + f_N.

    C_t(p) = k_t(p) - m_t(p) g_t h_t(p) with k, m the scheme kernels of :class:`FlowField`, h_t the
    model's linear filter and g_t its scale (residual_scale inside a GaussianExactScore, else
    1); f_N = ifft(m_t fft(g_t n(phi, t))) with n the nonlinear channels, whose weighted trace
    the model gives exactly.
    """

    def __init__(self, flow: FlowField, score_fn):
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


