"""The catalog: every name, parameter and default that both the library classes and the
campaign schema need, in one torch-free module (the schema validates without importing torch).
The classes read their defaults from here and the schema reads the same tables, so nothing is
copied and nothing can drift. Edit names and defaults here only.

Scheme defaults (``SCHEME_DEFAULTS``, read by ``rgdist.rg.schemes``: constructor defaults and
``default_t_min``, and by ``rgdist.campaign.spec``):

``t_min`` is the smallest time of training and sampling; the other keys are the keyword
arguments of the scheme's constructor, in their order.

Why these values (free-field estimates; ``Scheme.leftover`` gives the exact numbers):

- carosso (T = 40, mu2 = 0.1): A_T = exp(-(phat^2 + mu2) T) <= exp(-4) on every mode; the
  leftover A_T^2 G / Sigma_T of the zero mode is 6.7e-5 G(0), below 0.1 while the data's
  G(0) = V <M^2> <= 1.5e3.
- polchinski, renormalized_polchinski (T = 2, Lambda0 = 4, m02 = 1, mu2 = 4): the prior
  spectrum of Polchinski spans exp(8 (e^(2T) - 1)/Lambda0^2) ~ 6e12 over the momenta (mu2
  cancels from that ratio), inside float64's 1/eps^2 = 2e31 (T = 3 gave 1e82 and NaN). The
  IR mass mu2 = 4 noises the low modes: A_T(0) = exp(-mu2 (e^(2T) - 1)/Lambda0^2) = 1.5e-6,
  so the zero mode's leftover is ~ 2e-6 G(0) (2e-12 G(0) renormalized; below 0.1 up to
  G(0) ~ 5e4, e.g. a 64^2 broken-phase lattice), where mu2 = 0 froze the zero mode and left
  the lowest non-zero modes mostly data (leftover 2.7-8.7 at N = 16). The range is
  mu2-independent but grows with d: exp(4d (e^(2T) - 1)/Lambda0^2) (6e17 in d = 3, beyond a
  float32 model's 7e13: `validate` refuses that pairing).
- vp, ve: the usual DDPM / score-SDE values.
"""
from __future__ import annotations

SCHEME_DEFAULTS: dict[str, dict[str, float]] = {
    "carosso": {"T": 40.0, "mu2": 0.1, "t_min": 1e-3},
    "polchinski": {"T": 2.0, "Lambda0": 4.0, "m02": 1.0, "mu2": 4.0, "t_min": 1e-3},
    "renormalized_polchinski": {"T": 2.0, "Lambda0": 4.0, "m02": 1.0, "mu2": 4.0, "t_min": 1e-3},
    "vp": {"T": 1.0, "beta_min": 0.1, "beta_max": 20.0, "t_min": 1e-3},
    "ve": {"T": 1.0, "sigma_min": 0.01, "sigma_max": 100.0, "t_min": 1e-5},
}

#: Largest leftover A_T^2 G / Sigma_T (max over the noised modes) a campaign accepts by
#: default (``scheme.max_leftover``). A mode whose data law is non-Gaussian keeps, at T, the
#: fraction (r / (1 + r))^2 of its standardized fourth cumulant (r = the leftover), which the
#: Gaussian prior replaces by 0: r <= 0.1 keeps that error below 0.83% of the data's own.
MAX_LEFTOVER = 0.1


# -- densities of the probability-flow sampler (rgdist.correct.likelihood) ----------------------
#: How the log-density of a sample is computed: "discrete" (exact density of the discrete map
#: run), "trace" (continuous-time formula with the exact divergence tr(df/dphi)), "hutchinson"
#: (stochastic trace estimator, any volume).
DENSITY_METHODS = ("discrete", "trace", "hutchinson")
#: Time integrators of the flow; the last two only with method "discrete".
INTEGRATORS = ("heun", "rk4", "split", "exponential", "implicit")
DISCRETE_ONLY = ("exponential", "implicit")
PROBES = ("rademacher", "gaussian")
#: Largest volume for which a generic network's full V x V Jacobian is formed.
MAX_EXACT_VOLUME = 256
#: Largest volume for a dense determinant of a closed-form (structured) step Jacobian.
MAX_STRUCTURED_VOLUME = 1024


def volume_limit(method: str, structured: bool = False, traced: bool = False) -> int | None:
    """Largest lattice volume V for density ``method`` (None: any V).

    A generic network's Jacobian costs V vector-Jacobian products per evaluation, so "trace"
    and "discrete" need V <= MAX_EXACT_VOLUME. A structured model (effective action without
    residual net: Jacobian in closed form) has an O(V) exact trace (any V) and a dense V x V
    determinant for "discrete" (V <= MAX_STRUCTURED_VOLUME). An exact-trace model (``traced``,
    model "trace") has an O(V K) exact divergence (any V for "trace"), but its full Jacobian
    ("discrete") is autograd's. "hutchinson" works at any V.
    """
    if method not in DENSITY_METHODS:
        raise ValueError(f"method: must be one of {DENSITY_METHODS}, got {method!r}")
    if method == "hutchinson":
        return None
    if structured:
        return MAX_STRUCTURED_VOLUME if method == "discrete" else None
    if traced and method == "trace":
        return None
    return MAX_EXACT_VOLUME
