"""Exact sampling with the learned sampler: independence Metropolis-Hastings (optionally
interleaved with HMC), importance reweighting against the phi^4 action, defensive mixtures
with bounded weights and the Pareto tail diagnostic of the weights. The proposal densities of
the probability-flow sampler are in rgdist.density. Library code: torch + numpy only."""
from rgdist.correct.metropolis import (
    FlowProposal,
    GaussianProposal,
    IndependenceMH,
    MHResult,
    ReplayProposal,
    independence_mh,
)
from rgdist.correct.mixture import MixtureProposal, defensive_mixture, log_weight_bound
from rgdist.correct.reweight import (
    WeightedAccumulator,
    ess_fraction,
    log_weights,
    normalized_weights,
    pareto_k,
    reweight,
)

__all__ = [
    "FlowProposal",
    "GaussianProposal",
    "IndependenceMH",
    "MHResult",
    "ReplayProposal",
    "MixtureProposal",
    "defensive_mixture",
    "log_weight_bound",
    "independence_mh",
    "WeightedAccumulator",
    "ess_fraction",
    "log_weights",
    "normalized_weights",
    "pareto_k",
    "reweight",
]
