"""Closed-form discretization bias of the reverse samplers on Gaussian data.

For data with spectrum G and the exact score s_t = -phi/P_t (P_t = A_t^2 G + Sigma_t), every
solver step of :mod:`rgdist.sample.solvers` acts on each mode as phi_s = f phi_t + noise of
variance q, so the mode's variance after the run follows the recursion V <- f^2 V + q from
the exact prior variance V = P_T. This module evaluates that recursion (float64, one mode per
lattice site, one time step at a time) and compares the result with the exact reverse process
on the same grid:

    euler_maruyama  f = 1 + h (alpha_t - beta_t^2 / P_t),  q = h beta_t^2
    exponential     f = a P_s / P_t,  q = v P_s / P_t      (reference spectrum = G: exact)
    ancestral       f = (1 - v / P_t) / a,  q = v Sigma_s / Sigma_t
    pc              Langevin corrector(s) at t, V <- V (1 - e M / P_t)^2 + 2 e M with
                    M = P_t (0 on frozen modes) and e = 2 snr^2 n_sites / sum_p M V / P_t^2
                    (the batch-averaged step rule in expectation), then the exponential step
    heun_ode        lam_u = -alpha_u + beta_u^2 / (2 P_u), f = 1 - h (lam_t + lam_s (1 - h lam_t)) / 2,
                    q = 0 (Euler, f = 1 - h lam_t, on a last step that ends at t = 0)
    denoise         f = (1 - Sigma_tmin / P_tmin) / A_tmin   (Tweedie's mean at the last time)

with h = t - s, a = A_t / A_s, v = Sigma_t - a^2 Sigma_s. The exact reverse process ends with
variance P_tmin (A_tmin^2 G^2 / P_tmin after denoising; G when the grid ends at t = 0).

``discretization`` = V / V_exact - 1 is what the solver, grid and step count add; ``total`` =
V / G - 1 adds the truncation at t_min (and the denoising's posterior-variance deficit,
relative O(Sigma_tmin / G)). Frozen modes are untouched by every solver (both are 0 there).
"""
from __future__ import annotations

import math

import torch

from rgdist.rg.schemes import Scheme
from rgdist.sample.solvers import ALL_SOLVERS, DEFAULT_SNR, check_times


def _coefs(scheme: Scheme, t: float):
    tt = torch.tensor(t, dtype=torch.float64)
    return (scheme.log_A(tt), scheme.Sigma(tt), scheme.alpha(tt), scheme.beta2(tt))


def gaussian_output_spectrum(scheme: Scheme, times, G, solver: str, *, denoise: bool = True,
                             snr: float = DEFAULT_SNR, corrector_steps: int = 1) -> torch.Tensor:
    """Per-mode variance (lattice.shape, G2 units) of ``solve(...)``'s output for Gaussian data
    of spectrum ``G`` with the exact score and reference spectrum G (the campaign's setting).
    Non-finite where the solver is unstable."""
    if solver not in ALL_SOLVERS:
        raise ValueError(f"solver must be one of {ALL_SOLVERS}, got {solver!r}")
    grid = check_times(times, scheme)
    G = torch.as_tensor(G, dtype=torch.float64).cpu()
    if tuple(G.shape) != scheme.lattice.shape:
        raise ValueError(f"G must be a spectrum of shape {scheme.lattice.shape}, got {tuple(G.shape)}")
    frozen = scheme.frozen_modes()
    n_sites = scheme.lattice.volume
    tiny = torch.finfo(torch.float64).tiny

    def P_of(log_a, sig):
        return (torch.exp(2 * log_a) * G + sig).clamp_min(tiny)

    la_t, sig_t, al_t, b2_t = _coefs(scheme, grid[0])
    P_t = P_of(la_t, sig_t)
    V = P_t.clone()
    with torch.no_grad():
        for t, s in zip(grid[:-1], grid[1:]):
            h = t - s
            la_s, sig_s, al_s, b2_s = _coefs(scheme, s)
            P_s = P_of(la_s, sig_s)
            a = torch.exp(la_t - la_s)
            v = (sig_t - a * a * sig_s).clamp_min(0)
            if solver == "euler_maruyama":
                f, q = 1 + h * (al_t - b2_t / P_t), h * b2_t
            elif solver in ("exponential", "pc"):
                if solver == "pc":
                    M = torch.where(frozen, torch.zeros_like(P_t), P_t)
                    for _ in range(int(corrector_steps)):
                        g2 = float((M * V / P_t**2).sum())
                        e = 2 * snr**2 * n_sites / g2 if g2 > 0 else 0.0
                        V = V * (1 - e * M / P_t) ** 2 + 2 * e * M
                f, q = a * P_s / P_t, v * P_s / P_t
            elif solver == "ancestral":
                pos = sig_t > 0
                f = (1 - v / P_t) / a
                q = torch.where(pos, v * sig_s / torch.where(pos, sig_t, torch.ones_like(sig_t)),
                                torch.zeros_like(sig_t))
            else:  # heun_ode
                lam_t = -al_t + b2_t / (2 * P_t)
                if s == 0.0:
                    f = 1 - h * lam_t
                else:
                    lam_s = -al_s + b2_s / (2 * P_s)
                    f = 1 - 0.5 * h * (lam_t + lam_s * (1 - h * lam_t))
                q = 0.0
            V = V * f * f + q
            la_t, sig_t, al_t, b2_t, P_t = la_s, sig_s, al_s, b2_s, P_s
        if denoise and grid[-1] > 0:
            f = (1 - sig_t / P_t) / torch.exp(la_t)
            V = V * f * f
    return V


def exact_output_spectrum(scheme: Scheme, t_end: float, G, *, denoise: bool = True) -> torch.Tensor:
    """What the exact reverse process gives at ``t_end`` (denoised as ``solve`` does)."""
    G = torch.as_tensor(G, dtype=torch.float64).cpu()
    if t_end <= 0:
        return G.clone()
    P = scheme.marginal_spectrum(float(t_end), G)
    if not denoise:
        return P
    A2 = scheme.A(float(t_end)) ** 2
    return A2 * G * G / P.clamp_min(torch.finfo(torch.float64).tiny)


def sampler_bias(scheme: Scheme, times, G, solver: str, *, denoise: bool = True,
                 snr: float = DEFAULT_SNR, corrector_steps: int = 1) -> dict:
    """The solver's Gaussian-part bias on ``times`` for data of spectrum ``G``.

    Returns {"spectrum": V (lattice.shape), "discretization": V/V_exact - 1 (lattice.shape,
    0 on frozen modes), "max_discretization": max |.| over the noised modes (inf if the solver
    is unstable), "max_total", "mean_total": max |V/G - 1| and mean (V/G - 1) over the noised
    modes, "n_steps"}.
    """
    grid = check_times(times, scheme)
    G = torch.as_tensor(G, dtype=torch.float64).cpu()
    V = gaussian_output_spectrum(scheme, grid, G, solver, denoise=denoise, snr=snr,
                                 corrector_steps=corrector_steps)
    exact = exact_output_spectrum(scheme, grid[-1], G, denoise=denoise)
    noised = ~scheme.frozen_modes()
    ok = exact > 0
    disc = torch.where(ok, V / torch.where(ok, exact, torch.ones_like(exact)) - 1, torch.zeros_like(V))
    disc = torch.where(noised, disc, torch.zeros_like(disc))
    total = (V / G - 1)[noised]

    def worst(x):
        x = x.abs()
        return math.inf if not bool(torch.isfinite(x).all()) else float(x.max())

    return {"spectrum": V, "discretization": disc,
            "max_discretization": worst(disc[noised]) if bool(noised.any()) else 0.0,
            "max_total": worst(total) if total.numel() else 0.0,
            "mean_total": float(total.mean()) if total.numel() else 0.0,
            "n_steps": len(grid) - 1}
