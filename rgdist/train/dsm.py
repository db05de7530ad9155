"""Denoising score matching with the exact Gaussian transition kernel of a scheme (SPEC 4-5).

For data phi_0 and t drawn from a time sampler q(t) (with weight w(t)),
    phi_t = A_t phi_0 + eps,   eps ~ N(0, Sigma_t)          (scheme.sample_forward)
    target~(p) = -eps~(p) / Sigma_t(p)                        (conditional score, momentum space)
    loss = E_t w(t) E (1/V^2) sum_p lambda_t(p) |s~_theta(phi_t, t)(p) - target~(p)|^2
with phi~ = fftn(phi) unnormalized, so (1/V^2) sum_p |f~(p)|^2 = (1/V) sum_x f_x^2: the loss is
per site, and with lambda = 1 it is the mean squared error per site in position space.
Mode weights lambda_t(p) (``weighting``):
    "sigma"      Sigma_t(p)   noise prediction: |sqrt(Sigma) s~ + xi~|^2 with xi white; O(1)
                              at every t (an untrained s = 0 gives exactly 1 per mode).
    "likelihood" beta_t^2(p)  Song et al.'s likelihood weighting (the loss bounds the KL).
    "none"       1            plain position-space MSE.
``zero_mode_weight`` b multiplies lambda_t(0) of the zero mode p = 0 (default 1: the weights
above). Any positive per-mode weight leaves the minimizer unchanged (the loss is a sum over p
of lambda_t(p) E|s~(p) - target~(p)|^2 and each term is minimized by the true score's p
component), so b only redistributes a finite model's capacity: with "sigma" the zero mode,
which carries the magnetization (chi, U, lambda_R), is otherwise 1/V of the loss.
Modes with Sigma_t(p) = 0 (frozen modes, never noised) carry no information and are excluded.

Time samplers (``t_sampler``), on [t_min, T]:
    "uniform"  t ~ U[t_min, T],                 w = 1.
    "log"      log t ~ U[log t_min, log T],     w = 1 (objective: uniform in log t; emphasises
               short times, where the score changes fastest).
    "log_is"   log t ~ U[log t_min, log T],     w = t log(T/t_min) / (T - t_min): importance
               sampling -- an unbiased estimate of the "uniform" objective (w = p_unif/q_log).
or a callable ``(batch, generator) -> (t, w)`` returning float64 tensors of shape (batch,).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from rgdist.catalog import T_SAMPLERS, WEIGHTINGS  # names shared with the campaign schema
from rgdist.checks import check_positive_float


def check_weighting(weighting: str) -> str:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return weighting


def check_t_sampler(t_sampler) -> str | Callable:
    if callable(t_sampler):
        return t_sampler
    if t_sampler not in T_SAMPLERS:
        raise ValueError(f"t_sampler must be one of {T_SAMPLERS} or a callable, got "
                         f"{t_sampler!r}")
    return t_sampler


def resolve_t_min(scheme, t_min) -> float:
    """t_min (default: the scheme's ``default_t_min``), checked to lie in (0, T)."""
    if t_min is None:
        t_min = getattr(scheme, "default_t_min", 1e-3 * scheme.T)
    try:
        t_min = float(t_min)
    except (TypeError, ValueError):
        raise ValueError(f"t_min must be a number in (0, T = {scheme.T}), got {t_min!r}") from None
    if not (math.isfinite(t_min) and 0 < t_min < scheme.T):
        raise ValueError(f"t_min must be a number in (0, T = {scheme.T}), got {t_min}")
    return t_min


def sample_times(t_sampler, batch: int, t_max: float, t_min: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (t, w), float64 tensors of shape (batch,) on the generator's device."""
    t_sampler = check_t_sampler(t_sampler)
    if callable(t_sampler):
        t, w = t_sampler(batch, generator)
        return torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)
    u = torch.rand(batch, generator=generator, device=generator.device, dtype=torch.float64)
    if t_sampler == "uniform":
        t = t_min + (t_max - t_min) * u
        return t, torch.ones_like(t)
    log_ratio = math.log(t_max / t_min)
    t = t_min * torch.exp(log_ratio * u)
    if t_sampler == "log":
        return t, torch.ones_like(t)
    return t, t * (log_ratio / (t_max - t_min))


def check_zero_mode_weight(b) -> float:
    return check_positive_float("zero_mode_weight", b)


def boost_zero_mode(lam: torch.Tensor, b: float, d: int) -> torch.Tensor:
    """lam (B, *shape) with its p = 0 entry (index 0 in every lattice direction) times b."""
    if b == 1.0:
        return lam
    lam = lam.clone()
    lam[(slice(None),) + (0,) * d] *= b
    return lam


def mode_weight(scheme, t: torch.Tensor, weighting: str, Sigma: torch.Tensor,
                zero_mode_weight: float = 1.0) -> torch.Tensor:
    """lambda_t(p), shape (B, *shape)."""
    check_weighting(weighting)
    if weighting == "sigma":
        lam = Sigma
    elif weighting == "likelihood":
        lam = scheme.beta2(t)
    else:
        lam = torch.ones_like(Sigma)
    return boost_zero_mode(lam, check_zero_mode_weight(zero_mode_weight), scheme.lattice.d)


def dsm_terms(model, scheme, phi0: torch.Tensor, t: torch.Tensor, generator: torch.Generator,
              *, weighting: str = "sigma", zero_mode_weight: float = 1.0) -> torch.Tensor:
    """Per-configuration DSM loss at given times t (B,), shape (B,) (see module docstring)."""
    lat = scheme.lattice
    lat.check_field(phi0, "phi0")
    t = t.to(device=phi0.device, dtype=torch.float64)
    phi_t, eps = scheme.sample_forward(phi0, t, generator)
    Sigma = scheme.Sigma(t).to(phi0.device)
    lam = mode_weight(scheme, t, weighting, Sigma, zero_mode_weight).to(phi0.device)
    noised = Sigma > 0
    inv = torch.where(noised, 1.0 / torch.where(noised, Sigma, torch.ones_like(Sigma)),
                      torch.zeros_like(Sigma))
    lam = torch.where(noised, lam, torch.zeros_like(lam))
    s = model(phi_t, t.to(phi_t.dtype))
    resid = lat.fft(s.to(phi0.dtype)) + lat.fft(eps) * inv.to(phi0.dtype)
    V = lat.volume
    return (lam.to(phi0.dtype) * resid.abs() ** 2).sum(dim=lat.dims) / V**2


def dsm_loss(model, scheme, phi0: torch.Tensor, generator: torch.Generator, *,
             weighting: str = "sigma", t_sampler="uniform", t_min: float | None = None,
             zero_mode_weight: float = 1.0) -> torch.Tensor:
    """Scalar DSM loss of one minibatch: mean over configurations of w(t) * dsm_terms."""
    weighting = check_weighting(weighting)
    t_min = resolve_t_min(scheme, t_min)
    t, w = sample_times(t_sampler, phi0.shape[0], scheme.T, t_min, generator)
    terms = dsm_terms(model, scheme, phi0, t.to(phi0.device), generator, weighting=weighting,
                      zero_mode_weight=zero_mode_weight)
    return (w.to(terms.device, terms.dtype) * terms).mean()
