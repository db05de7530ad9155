"""Model log-densities of the probability-flow sampler (the proposal density of exact MH).

Probability-flow ODE (position space, mode-wise filters; t runs from T down to t_min):

    dphi/dt = f(phi, t) = ifft( -alpha_t(p) phi~(p) - 1/2 beta_t^2(p) s~(phi, t)(p) ).

Along a solution, d/dt log p_t(phi_t) = -div f, hence

    log p_{t_min}(phi_{t_min}) = log p_T(phi_T) + int_{t_min}^{T} div f(phi_t, t) dt,

with p_T the Gaussian prior of spectrum S_T = ``scheme.prior_spectrum(prior_G)``. Time
stepping is Heun's method on the grid ``scheme.time_grid(n_steps, grid, t_min)``, the same
step function as ``rgdist.sample.solvers`` solver "heun_ode" with ``denoise=False`` (Euler on
a last step that ends at t = 0), or one of the other integrators. The log-density comes by
``method`` (names and volume limits from rgdist.catalog): "discrete" (the exact density of
the discrete map run, for exact MH), "trace" (the continuous-time formula with the exact
divergence; formerly "exact") or "hutchinson" (stochastic trace estimator, any volume).

Modules, by role:

* :mod:`rgdist.density.prior`: the Gaussian prior and its density; :class:`GaussianScore`.
* :mod:`rgdist.density.field`: the probability-flow field :class:`FlowField` with its
  closed-form linear (Gaussian) part; structured and exact-trace remainders.
* :mod:`rgdist.density.divergence`: Jacobians by vector-Jacobian products, the divergence
  (exact or Hutchinson), ``slogdet`` / ``solve`` on batches of step Jacobians (not
  re-exported here: ``solve`` is a linear solve, not rgdist.sample.solve).
* :mod:`rgdist.density.steps`: the integrators' steps (Heun, RK4, exponential, implicit,
  split), their Jacobians and inverses.
* :mod:`rgdist.density.density`: sampling with log q, the log-likelihood of given
  configurations and the differentiable path for training.

Library code: torch + numpy only.
"""
from rgdist.catalog import (
    DENSITY_METHODS,
    DISCRETE_ONLY,
    INTEGRATORS,
    MAX_EXACT_VOLUME,
    MAX_STRUCTURED_VOLUME,
    PROBES,
    volume_limit,
)
from rgdist.density.density import flow_with_logq, ode_log_likelihood, ode_sample_with_logq
from rgdist.density.divergence import Divergence, batched_jacobian
from rgdist.density.field import (
    FlowField,
    has_exact_trace,
    remainder_jacobian,
    remainder_trace,
    split_score,
)
from rgdist.density.prior import (
    GaussianScore,
    ScoreFn,
    gaussian_log_density,
    prior_log_density,
    prior_spectrum,
    same_scheme,
)
from rgdist.density.steps import (
    SplitFlow,
    augmented_heun_step,
    discrete_step,
    exponential_step,
    implicit_inverse,
    implicit_step,
    invert_step,
    rk4_step,
)

__all__ = [
    "DENSITY_METHODS",
    "DISCRETE_ONLY",
    "INTEGRATORS",
    "MAX_EXACT_VOLUME",
    "MAX_STRUCTURED_VOLUME",
    "PROBES",
    "volume_limit",
    "flow_with_logq",
    "ode_log_likelihood",
    "ode_sample_with_logq",
    "Divergence",
    "batched_jacobian",
    "FlowField",
    "has_exact_trace",
    "remainder_jacobian",
    "remainder_trace",
    "split_score",
    "GaussianScore",
    "ScoreFn",
    "gaussian_log_density",
    "prior_log_density",
    "prior_spectrum",
    "same_scheme",
    "SplitFlow",
    "augmented_heun_step",
    "discrete_step",
    "exponential_step",
    "implicit_inverse",
    "implicit_step",
    "invert_step",
    "rk4_step",
]
