"""RG-flow measurements: observables along the forward flow and along the learned
reverse sampler, their Gaussian closed forms, and the running couplings of the
effective-action model."""
from rgdist.flow.couplings import WEIGHTINGS, gaussian_couplings, learned_couplings
from rgdist.flow.forward import (
    DEFAULT_OBSERVABLES,
    OBSERVABLES,
    FlowAccumulator,
    FlowResult,
    accumulate_forward_flow,
    box_size,
    forward_flow,
    flow_snapshots,
    gaussian_flow,
)
from rgdist.flow.learned import (
    accumulate_learned_flow,
    compare_flows,
    deviation_summary,
    learned_flow,
    merged_grid,
)

__all__ = [
    "OBSERVABLES",
    "DEFAULT_OBSERVABLES",
    "WEIGHTINGS",
    "FlowResult",
    "FlowAccumulator",
    "accumulate_forward_flow",
    "forward_flow",
    "gaussian_flow",
    "flow_snapshots",
    "box_size",
    "accumulate_learned_flow",
    "learned_flow",
    "merged_grid",
    "compare_flows",
    "deviation_summary",
    "gaussian_couplings",
    "learned_couplings",
]
