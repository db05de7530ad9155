"""Default parameters of the noising schemes: the one table read by both the scheme classes
(``rgdist.rg.schemes``: constructor defaults and ``default_t_min``) and the campaign schema
(``rgdist.campaign.spec``, which validates without importing torch). Edit defaults here only.

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
