"""Reverse-time samplers for the noising schemes of rgdist.rg (SPEC section 5).

All solvers share one signature, :func:`solve`, and act mode by mode in momentum space:

    reverse SDE:        dphi = [-alpha phi - beta^2 s(phi, t)] dt + beta dW   (t decreasing)
    probability flow:   dphi = [-alpha phi - 1/2 beta^2 s(phi, t)] dt

One step runs from t to s < t, h = t - s; a = A_t/A_s, v = Sigma_t - a^2 Sigma_s (the noise
the forward process adds between s and t), xi white noise, s_t = score_fn(phi_t, t).

- ``euler_maruyama``:  phi_s = phi_t + h (alpha_t phi_t + beta_t^2 s_t) + sqrt(h beta_t^2) xi
  (first order; stable only for h alpha_t < ~2 on every mode).
- ``exponential``:     exponential integrator: the Gaussian part of the reverse process (the
  exact reverse transition of Gaussian data with reference spectrum G, keyword ``G``)
  is solved exactly and the remainder r = s + phi/R of the score is held fixed
  over the step (see :func:`_exponential`). With G = the data spectrum and the exact score
  every step is exact for any step size, and a learned remainder's error is not amplified
  on stiff modes (large alpha h), so coarse grids stay stable. It needs ``G`` (a
  ValueError otherwise): without it, it used to fall back silently to the ancestral step,
  whose variance deficit made G2 0.63 / 0.81 / 0.93 of exact at 100 / 300 / 1200 uniform
  steps (9x9, exact score). A campaign always passes the measured data spectrum.
- ``ancestral``:       that first-order ancestral (Tweedie) step of :func:`_ancestral`, for
  when no reference spectrum exists; only on request, with fine steps (not a campaign solver).
- ``pc``:              predictor-corrector: ``corrector_steps`` Langevin steps at t, then the
  exponential predictor (so it needs ``G`` too). The Langevin step is preconditioned by
  M = A_t^2 G + Sigma_t (0 on frozen modes): phi' = phi + e M s + sqrt(2 e M) z, with e = 2 snr^2 <|z|^2> / <|sqrt(M) s|^2>
  (the target signal-to-noise rule of score-based SDE samplers, with norms averaged over the
  batch: per-sample norms correlate e with the state and bias small lattices by O(1/V); the
  one scalar e per step is the only coupling between the samples of a batch).
  Unadjusted Langevin is itself biased: with the exact Gaussian score its fixed point is
  P/(1 - e/2), e ~ 2 snr^2, i.e. +2.6% at snr = 0.16 (the former default: G2 +0.8% Carosso,
  +2.7% Polchinski, +2.2% VP). The default ``snr`` = :data:`DEFAULT_SNR` = 0.05 keeps that
  bias at 0.25% at most.
- ``heun_ode``:        probability-flow ODE with Heun's method (2nd order; 2 score calls per
  step; Euler on a last step that ends at t = 0). Explicit, so it is biased where h alpha is
  not small: at the Carosso defaults (T = 40) a uniform grid of 100 steps gives G2 up to +66% on
  the top modes.

Euler-Maruyama, Heun and pc carry a discretization bias that depends on scheme, grid and step
count; :func:`rgdist.sample.audit.sampler_bias` computes it in closed form for Gaussian data
(the campaign refuses settings whose bias exceeds ``sample.max_bias``).

Final denoising (``denoise=True``): Tweedie's mean phi_0 = (phi_t + Sigma_t s_t)/A_t at the last
grid time. It removes the noise left at t_min but, being a posterior mean, lowers each mode's
spectrum by the posterior variance (relative O(Sigma_tmin/G)). A grid that ends at t = 0 with
the exponential solver makes the last step an exact ancestral draw instead.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from rgdist.catalog import SOLVERS  # the names shared with the campaign schema
from rgdist.rg.schemes import Scheme
#: solvers accepted by :func:`solve` besides :data:`SOLVERS` (not offered to campaigns)
EXTRA_SOLVERS = ("ancestral",)
ALL_SOLVERS = SOLVERS + EXTRA_SOLVERS
#: default target signal-to-noise ratio of the ``pc`` corrector (its Langevin bias is ~ snr^2)
DEFAULT_SNR = 0.05
#: solvers whose predictor is the exponential step with the reference spectrum G
NEEDS_G = ("exponential", "pc")

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Ctx:
    """Per-call state. Fields are transformed with the real FFT (half the last axis); the
    scheme's closed forms (float64, full lattice shape) are sliced to that half by ``c``."""

    def __init__(self, score_fn, scheme, phi, generator, G):
        self.score_fn = score_fn
        self.scheme = scheme
        self.lat = scheme.lattice
        self.shape, self.dims = self.lat.shape, self.lat.dims
        self.device, self.dtype, self.batch = phi.device, phi.dtype, phi.shape[0]
        self.generator = generator
        self.G = G
        self.half = self.shape[-1] // 2 + 1
        self.frozen = scheme.frozen_modes(self.device)
        # Parseval weights of the half spectrum: columns 0 (and N/2) are their own mirror
        w = torch.full((self.half,), 2.0, dtype=self.dtype, device=self.device)
        w[0] = 1.0
        if self.shape[-1] % 2 == 0:
            w[-1] = 1.0
        self.parseval = w
        self.nfe = 0

    def fft(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfftn(x, dim=self.dims)

    def ifft(self, X: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfftn(X, s=self.shape, dim=self.dims)

    def c(self, x: torch.Tensor) -> torch.Tensor:
        """A mode-wise coefficient (lattice.shape) on the half spectrum, in the field dtype."""
        return x[..., : self.half].to(self.dtype)

    def coef(self, name: str, t: float) -> torch.Tensor:
        tt = torch.tensor(t, dtype=torch.float64, device=self.device)
        return getattr(self.scheme, name)(tt)

    def score_hat(self, phi: torch.Tensor, t: float) -> torch.Tensor:
        """Half-spectrum transform of score_fn(phi, t) (t broadcast to shape (B,))."""
        tb = torch.full((self.batch,), t, dtype=self.dtype, device=self.device)
        self.nfe += 1
        return self.fft(self.score_fn(phi, tb).detach().to(self.dtype))

    def noise_hat(self) -> torch.Tensor:
        """Half-spectrum transform of fresh white noise (spectrum 1)."""
        return self.fft(torch.randn((self.batch, *self.shape), generator=self.generator,
                                    device=self.device, dtype=self.dtype))

    def reference(self, t: float) -> torch.Tensor:
        """A_t^2 G + Sigma_t (float64), G = 0 when no reference spectrum was given."""
        sig = self.coef("Sigma", t)
        if self.G is None:
            return sig
        return torch.exp(2 * self.coef("log_A", t)) * self.G + sig

    def norm2(self, X: torch.Tensor) -> torch.Tensor:
        """sum_x |x|^2 per sample from the half spectrum X (Parseval)."""
        return (X.abs().square() * self.parseval).sum(dim=self.dims) / self.lat.volume


def _euler_maruyama(ctx: _Ctx, phi, t, s):
    h = t - s
    alpha, beta2 = ctx.coef("alpha", t), ctx.coef("beta2", t)
    S = ctx.score_hat(phi, t)
    X = ctx.fft(phi) * ctx.c(1 + h * alpha) + S * ctx.c(h * beta2)
    return ctx.ifft(X + ctx.noise_hat() * ctx.c(torch.sqrt(h * beta2)))


_GL_NODES, _GL_WEIGHTS = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(8))


def _remainder_weight(ctx: _Ctx, t: float, s: float) -> torch.Tensor:
    """w(p) = int_s^t (A_u/A_s) (R_s/R_u) beta_u^2 du, R = A^2 G + Sigma (composite
    8-point Gauss-Legendre with sub-intervals no longer than 1/max(alpha): the integrand
    decays like exp(-alpha (u - s)), so this is accurate to rounding for any step)."""
    h = t - s
    a_max = max(float(ctx.coef("alpha", t).max()), float(ctx.coef("alpha", s).max()), 0.0)
    m = int(min(256, max(1, math.ceil(a_max * h))))
    edges = s + h * torch.arange(m + 1, dtype=torch.float64, device=ctx.device) / m
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    nodes, weights = _GL_NODES.to(ctx.device), _GL_WEIGHTS.to(ctx.device)
    u = (mid[:, None] + half[:, None] * nodes[None, :]).reshape(-1)
    wq = (half[:, None] * weights[None, :]).reshape(-1)
    sc = ctx.scheme
    log_a_u = sc.log_A(u)
    R_u = sc.Sigma(u) if ctx.G is None else torch.exp(2 * log_a_u) * ctx.G + sc.Sigma(u)
    R_s = ctx.reference(s)
    ok = R_u > 0
    ratio = torch.where(ok, R_s / torch.where(ok, R_u, torch.ones_like(R_u)), torch.zeros_like(R_u))
    f = torch.exp(log_a_u - ctx.coef("log_A", s)) * ratio * sc.beta2(u)
    return (wq.view(-1, *([1] * (f.dim() - 1))) * f).sum(0)


def _ancestral(ctx: _Ctx, phi, t, s):
    """Without a reference spectrum: the ancestral (Tweedie) step
    phi_s = (phi_t + v s_t)/a + sqrt(v Sigma_s/Sigma_t) xi (the posterior mean
    E[phi_s | phi_t] for any data, DDPM posterior variance; first order). Its score error
    enters with weight v/a, which grows like exp(alpha h) on stiff modes: use small steps."""
    log_a = ctx.coef("log_A", t) - ctx.coef("log_A", s)
    sig_t, sig_s = ctx.coef("Sigma", t), ctx.coef("Sigma", s)
    v = (sig_t - torch.exp(2 * log_a) * sig_s).clamp_min(0)
    pos = sig_t > 0
    var = torch.where(pos, v * sig_s / torch.where(pos, sig_t, torch.ones_like(sig_t)),
                      torch.zeros_like(sig_t))
    S = ctx.score_hat(phi, t)
    X = (ctx.fft(phi) + S * ctx.c(v)) * ctx.c(torch.exp(-log_a))
    return ctx.ifft(X + ctx.noise_hat() * ctx.c(var.sqrt()))


def _exponential(ctx: _Ctx, phi, t, s):
    """Gaussian part exact, non-Gaussian remainder of the score held fixed over the step:

        phi_s = (a R_s/R_t) phi_t + w r_t + sqrt(v R_s/R_t) xi,   r_t = s_t + phi_t/R_t,

    R = A^2 G + Sigma the reference spectrum, a = A_t/A_s,
    v = Sigma_t - a^2 Sigma_s and w = int_s^t (A_u/A_s)(R_s/R_u) beta_u^2 du. The first and
    last terms are the exact reverse transition of Gaussian data with spectrum G; the middle
    one solves the linear reverse SDE with the remainder r frozen (variation of constants).
    With the exact score of such data r = 0 and every step is exact. Unlike the Tweedie form
    (phi_t + v s_t)/a, an error in the remainder enters with the bounded weight w ~ beta^2/alpha
    rather than v/a, which grows like exp(alpha h) on stiff modes.
    """
    log_a = ctx.coef("log_A", t) - ctx.coef("log_A", s)
    sig_t, sig_s = ctx.coef("Sigma", t), ctx.coef("Sigma", s)
    v = (sig_t - torch.exp(2 * log_a) * sig_s).clamp_min(0)
    R_t, R_s = ctx.reference(t), ctx.reference(s)
    pos = R_t > 0
    inv_R_t = torch.where(pos, 1 / torch.where(pos, R_t, torch.ones_like(R_t)), torch.zeros_like(R_t))
    var = v * R_s * inv_R_t
    mean_factor = torch.where(pos, torch.exp(log_a) * R_s * inv_R_t, torch.ones_like(R_t))
    w = _remainder_weight(ctx, t, s)
    X = ctx.fft(phi)
    S = ctx.score_hat(phi, t)
    remainder = S + X * ctx.c(inv_R_t)
    out = X * ctx.c(mean_factor) + remainder * ctx.c(w)
    return ctx.ifft(out + ctx.noise_hat() * ctx.c(var.sqrt()))


def _langevin(ctx: _Ctx, phi, t, snr):
    M = ctx.reference(t)
    M = torch.where(ctx.frozen, torch.zeros_like(M), M)
    sqrt_M = ctx.c(M.sqrt())
    S = ctx.score_hat(phi, t)
    Z = ctx.noise_hat()
    g2 = ctx.norm2(S * sqrt_M).mean()
    eps = torch.where(g2 > 0, 2 * snr**2 * ctx.norm2(Z).mean() / g2.clamp_min(
        torch.finfo(ctx.dtype).tiny), torch.zeros_like(g2))
    return ctx.ifft(ctx.fft(phi) + eps * ctx.c(M) * S + torch.sqrt(2 * eps) * sqrt_M * Z)


def _flow_hat(ctx: _Ctx, X, phi, t):
    """Half spectrum of the probability-flow velocity -alpha phi - 1/2 beta^2 s (X = fft phi)."""
    S = ctx.score_hat(phi, t)
    return -X * ctx.c(ctx.coef("alpha", t)) - 0.5 * S * ctx.c(ctx.coef("beta2", t))


def heun_step(field: Callable, x: torch.Tensor, t: float, s: float, *,
              euler_to_zero: bool = True):
    """One Heun step of dx/du = v(x, u) from time t to time s (either direction), h = t - s:

        pred = x - h v(x, t),   y = x - h/2 (v(x, t) + v(pred, s)),

    and y = pred (Euler) on a step that ends at s = 0 when ``euler_to_zero``. ``field(x, u)``
    returns ``(v, aux)``, aux anything the caller integrates along the step (None for the
    sampler; the divergence for rgdist.density). Returns ``(y, aux_t, aux_s)``, aux_s None
    after an Euler step. The one Heun step of solver "heun_ode" (on the field's Fourier
    transform) and of the probability-flow densities of rgdist.density (on the field).
    """
    h = t - s
    v1, aux1 = field(x, t)
    pred = x - h * v1
    if euler_to_zero and s == 0.0:
        return pred, aux1, None
    v2, aux2 = field(pred, s)
    return x - 0.5 * h * (v1 + v2), aux1, aux2


def _heun(ctx: _Ctx, phi, t, s):
    X = ctx.fft(phi)

    def velocity(Y, u):  # at the step's start, the field phi itself (not ifft(fft(phi)))
        return _flow_hat(ctx, Y, phi if Y is X else ctx.ifft(Y), u), None

    return ctx.ifft(heun_step(velocity, X, t, s)[0])


def _tweedie(ctx: _Ctx, phi, t):
    S = ctx.score_hat(phi, t)
    X = (ctx.fft(phi) + S * ctx.c(ctx.coef("Sigma", t))) * ctx.c(torch.exp(-ctx.coef("log_A", t)))
    return ctx.ifft(X)


def check_times(times, scheme: Scheme) -> list[float]:
    """A decreasing grid T >= t_0 > ... > t_n >= 0 with n >= 1, as Python floats."""
    times = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    if times.dim() != 1:
        raise ValueError(f"times must be a 1D grid, got shape {tuple(times.shape)}")
    if times.numel() < 2:
        raise ValueError(f"n_steps must be >= 1: times needs at least 2 points, got {times.numel()}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError("times must be finite")
    if not bool((times[1:] < times[:-1]).all()):
        raise ValueError("times must be strictly decreasing (from T towards t_min)")
    if float(times[-1]) < 0 or float(times[0]) > scheme.T * (1 + 1e-12):
        raise ValueError(f"times must lie in [0, T={scheme.T}], got [{float(times[-1])}, {float(times[0])}]")
    return times.tolist()


def _record_indices(grid: list[float], record_times) -> dict[int, float]:
    if record_times is None:
        return {}
    g = torch.tensor(grid, dtype=torch.float64)
    out = {}
    for r in torch.as_tensor(record_times, dtype=torch.float64).reshape(-1).tolist():
        i = int(torch.argmin((g - r).abs()))
        out[i] = grid[i]
    return out


def solve(score_fn: ScoreFn, scheme: Scheme, phi_T: torch.Tensor, times, *,
          solver: str = "exponential", generator: torch.Generator | None = None,
          callback: Callable[[dict], None] | None = None, record_times=None,
          denoise: bool = True, corrector_steps: int = 1, snr: float = DEFAULT_SNR, G=None):
    """Integrate the reverse process from ``times[0]`` (usually T) down to ``times[-1]``.

    score_fn(phi, t) -> score, with phi (B, *lattice.shape) and t of shape (B,) (phi's dtype).
    ``times``: decreasing grid (see Scheme.time_grid). ``G``: the reference spectrum
    (lattice.shape, G2 units; usually the data's measured spectrum) of the exponential/pc
    steps and the corrector's preconditioner: required by ``exponential`` and ``pc``.
    ``callback({"step", "t", "phi", "nfe"})`` runs after each step.
    Returns ``(phi_final, records)``: records maps each grid time closest to one of
    ``record_times`` to a copy of the ensemble there (before denoising).
    """
    if solver not in ALL_SOLVERS:
        raise ValueError(f"solver must be one of {ALL_SOLVERS}, got {solver!r}")
    if not isinstance(scheme, Scheme):
        raise ValueError(f"scheme must be a rgdist.rg.Scheme, got {type(scheme).__name__}")
    lat = scheme.lattice
    lat.check_field(phi_T, "phi_T")
    grid = check_times(times, scheme)
    if solver != "heun_ode" and not isinstance(generator, torch.Generator):
        raise ValueError(f"solver {solver!r} draws noise: pass generator=torch.Generator")
    if isinstance(corrector_steps, bool) or not hasattr(corrector_steps, "__index__") \
            or int(corrector_steps) < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}")
    snr = float(snr)
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be > 0, got {snr}")
    if G is not None:
        G = torch.as_tensor(G).to(device=phi_T.device, dtype=torch.float64)
        if tuple(G.shape) != lat.shape or bool((G < 0).any()):
            raise ValueError(f"G must be a non-negative spectrum of shape {lat.shape}, "
                             f"got shape {tuple(G.shape)}")
    if solver in NEEDS_G and G is None:
        raise ValueError(
            f"solver {solver!r} needs the reference spectrum G (the data's G2(p), e.g. "
            "rgdist.train.measured_spectrum(configs, lattice); sample_ensemble and learned_flow "
            "take it as prior_G): without it the step is the first-order ancestral one, whose "
            "variance deficit biases G2 (0.63 of exact at 100 uniform steps). Pass G, or ask "
            "for that step explicitly with solver='ancestral' on a fine grid")

    ctx = _Ctx(score_fn, scheme, phi_T, generator, G)
    wanted = _record_indices(grid, record_times)
    records: dict[float, torch.Tensor] = {}
    phi = phi_T.detach()
    if 0 in wanted:
        records[wanted[0]] = phi.clone()
    # no torch.no_grad(): a score_fn may differentiate an effective action internally;
    # its output is detached so no graph builds up over the steps
    for i in range(len(grid) - 1):
        t, s = grid[i], grid[i + 1]
        if solver == "euler_maruyama":
            phi = _euler_maruyama(ctx, phi, t, s)
        elif solver == "exponential":
            phi = _exponential(ctx, phi, t, s)
        elif solver == "ancestral":
            phi = _ancestral(ctx, phi, t, s)
        elif solver == "pc":
            for _ in range(int(corrector_steps)):
                phi = _langevin(ctx, phi, t, snr)
            phi = _exponential(ctx, phi, t, s)
        else:
            phi = _heun(ctx, phi, t, s)
        if i + 1 in wanted:
            records[wanted[i + 1]] = phi.clone()
        if callback is not None:
            callback({"step": i + 1, "t": s, "phi": phi, "nfe": ctx.nfe})
    if denoise and grid[-1] > 0:
        phi = _tweedie(ctx, phi, grid[-1])
    return phi, records


def nfe_per_sample(solver: str, n_steps: int, *, corrector_steps: int = 1, denoise: bool = True,
                   ends_at_zero: bool = False) -> int:
    """Score evaluations per configuration that :func:`solve` makes on an n_steps grid."""
    if solver not in ALL_SOLVERS:
        raise ValueError(f"solver must be one of {ALL_SOLVERS}, got {solver!r}")
    per = {"euler_maruyama": 1, "exponential": 1, "ancestral": 1, "pc": 1 + int(corrector_steps),
           "heun_ode": 2}
    n = per[solver] * int(n_steps)
    if solver == "heun_ode" and ends_at_zero:
        n -= 1
    if denoise and not ends_at_zero:
        n += 1
    return n
