"""Score networks s_theta(phi, t) and their registry (SPEC section 5).

Every model maps ``(phi (B, *shape), t (B,)) -> score (B, *shape)``, is translation
equivariant (periodic) and odd under phi -> -phi by construction.
"""
from rgdist.models.convnet import ConvScore
from rgdist.models.effective import (
    OPERATORS,
    EffectiveActionScore,
    GaussianExactScore,
    operator_gradients,
    operator_values,
)
from rgdist.models.layers import ScoreModel, n_parameters
from rgdist.models.registry import (
    MODELS,
    allowed_params,
    build_model,
    load_named_arrays,
    named_arrays,
    unwrap,
)
from rgdist.models.tracenet import TraceScore
from rgdist.models.unet import UNetScore

__all__ = [
    "ScoreModel",
    "ConvScore",
    "UNetScore",
    "TraceScore",
    "EffectiveActionScore",
    "GaussianExactScore",
    "OPERATORS",
    "operator_values",
    "operator_gradients",
    "MODELS",
    "allowed_params",
    "build_model",
    "named_arrays",
    "load_named_arrays",
    "unwrap",
    "n_parameters",
]
