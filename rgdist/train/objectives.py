"""Training objectives besides denoising score matching: reverse KL and the path-aware objective.

Reverse KL at t = 0 (self-training from the action alone, no data):
    KL(q_theta || p) = E_{phi ~ q_theta}[ log q_theta(phi) + S(phi) ] + log Z,
with phi the end point of the probability-flow ODE of the model from phi_T ~ N(0, S_T) and
    log q_theta(phi) = log N(phi_T; 0, S_T) + int_{t_min}^T div f(phi_t, t) dt,
the divergence EXACT (rgdist.models.TraceScore: O(V K) trace) and the path integrated by the
classical RK4 scheme on the augmented ODE (rgdist.density.flow_with_logq). The
gradient is the reparameterization gradient through the whole path; ``checkpoint=True``
recomputes each ODE step in the backward pass, so memory is that of one step. The loss is
reported per site: L_rkl = E[log q + S] / V (= (KL - log Z)/V, bounded below by -log Z / V).

Path-aware objective (arXiv 2308.12355, Eq. 5.22):
    J(theta) = KL(p_theta,0 || p_0) + int_0^T lambda(t) KL(p_t || p_theta,t) dt.
The first term is the reverse KL above. The path term is carried by denoising score matching
on HMC data: for the reverse process of the model, KL(p_t || p_theta,t) is bounded (up to a
theta-independent constant) by the score-matching integral 1/2 int_t^T beta_u^2 E|s_theta -
grad log p_u|^2 du, which DSM estimates without bias up to a constant (rgdist.train.dsm).
The surrogate used here is therefore
    J_surrogate = L_rkl + path_weight * L_dsm,
with L_dsm the per-site DSM loss of ``weighting`` (default "likelihood": beta_t^2 mode
weights, the weighting for which DSM is that KL bound with lambda uniform in t) and
t ~ U[t_min, T]. path_weight = 0 is reverse KL only.
"""
from __future__ import annotations

import torch

from rgdist.catalog import OBJECTIVES  # the names shared with the campaign schema
from rgdist.density import (
    flow_with_logq,
    gaussian_log_density,
    has_exact_trace,
    prior_spectrum,
)


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def check_reverse_kl_model(model, scheme) -> None:
    """Reverse KL needs the exact divergence along the path, with gradients."""
    if not has_exact_trace(model, scheme, differentiable=True):
        raise ValueError("objectives 'reverse_kl' and 'path' need a score model with an exact, "
                         "differentiable divergence: model 'trace' (alone or with "
                         f"gaussian_exact); got {type(model).__name__}")


def reverse_kl_sample(model, scheme, action, batch: int, generator: torch.Generator, *,
                      times, prior_G=None, integrator: str = "rk4", checkpoint: bool = True,
                      dtype=torch.float64):
    """Draw ``batch`` configurations through the model's flow, differentiably.

    Returns (phi, log_q, log_w) with log_w = -S(phi) - log_q (importance log-weights; their
    Kish ESS measures the sampler's quality).
    """
    lat = scheme.lattice
    spec = prior_spectrum(scheme, prior_G, generator.device)
    phi_T = lat.colored_noise(spec, batch, generator).to(dtype)
    log_prior = gaussian_log_density(phi_T, spec, lat).to(torch.float64)
    phi, delta = flow_with_logq(model, scheme, phi_T, times, integrator=integrator,
                                checkpoint=checkpoint)
    log_q = log_prior + delta
    log_w = -action(phi).to(torch.float64) - log_q
    return phi, log_q, log_w


def reverse_kl_loss(model, scheme, action, batch: int, generator: torch.Generator, *, times,
                    prior_G=None, integrator: str = "rk4", checkpoint: bool = True):
    """(L_rkl, log_w): the per-site reverse-KL loss E[log q + S]/V and the detached log-weights."""
    _, _, log_w = reverse_kl_sample(model, scheme, action, batch, generator, times=times,
                                    prior_G=prior_G, integrator=integrator, checkpoint=checkpoint)
    return -log_w.mean() / scheme.lattice.volume, log_w.detach()


def kish_ess_fraction(log_w: torch.Tensor) -> float:
    """(sum w)^2 / (n sum w^2) of importance log-weights (1 for a perfect sampler)."""
    lw = log_w.detach().to(torch.float64)
    lw = lw - lw.max()
    w = torch.exp(lw)
    return float(w.sum() ** 2 / (lw.numel() * (w * w).sum()))
