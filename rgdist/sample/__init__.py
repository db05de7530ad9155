"""Reverse-time samplers (one signature for all solvers) and batched, chunk-seeded ensembles."""
from rgdist.sample.ensemble import EnsembleResult, chunk_streams, n_chunks, sample_ensemble
from rgdist.sample.solvers import SOLVERS, check_times, nfe_per_sample, solve

__all__ = [
    "SOLVERS",
    "solve",
    "check_times",
    "nfe_per_sample",
    "EnsembleResult",
    "sample_ensemble",
    "chunk_streams",
    "n_chunks",
]
