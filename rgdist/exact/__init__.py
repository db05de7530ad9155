"""Exact sampling with the learned sampler: model log-densities of the probability-flow
sampler, independence Metropolis-Hastings (optionally interleaved with HMC) and importance
reweighting against the phi^4 action. Library code: torch + numpy only."""
from rgdist.exact.likelihood import (
    MAX_EXACT_VOLUME,
    METHODS,
    PROBES,
    GaussianScore,
    batched_jacobian,
    discrete_step,
    split_score,
    gaussian_log_density,
    heun_step,
    ode_log_likelihood,
    ode_sample_with_logq,
    prior_log_density,
    prior_spectrum,
)
from rgdist.exact.metropolis import (
    FlowProposal,
    GaussianProposal,
    IndependenceMH,
    MHResult,
    independence_mh,
)
from rgdist.exact.reweight import (
    WeightedAccumulator,
    ess_fraction,
    log_weights,
    normalized_weights,
    reweight,
)

__all__ = [
    "FlowProposal",
    "GaussianProposal",
    "IndependenceMH",
    "MHResult",
    "independence_mh",
    "WeightedAccumulator",
    "ess_fraction",
    "log_weights",
    "normalized_weights",
    "reweight",
    "MAX_EXACT_VOLUME",
    "METHODS",
    "PROBES",
    "batched_jacobian",
    "discrete_step",
    "GaussianScore",
    "split_score",
    "gaussian_log_density",
    "heun_step",
    "ode_log_likelihood",
    "ode_sample_with_logq",
    "prior_log_density",
    "prior_spectrum",
]
