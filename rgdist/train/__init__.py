"""Denoising score matching: loss, data sources, trainer and its callbacks (SPEC section 5)."""
from rgdist.train.callbacks import Callback, CheckpointHook, History, ProgressPrinter, StopWhen
from rgdist.train.data import EnsembleData, StreamingHMCData, measured_spectrum
from rgdist.train.dsm import (
    T_SAMPLERS,
    WEIGHTINGS,
    dsm_loss,
    dsm_terms,
    mode_weight,
    sample_times,
)
from rgdist.train.trainer import TrainConfig, Trainer

__all__ = [
    "dsm_loss",
    "dsm_terms",
    "mode_weight",
    "sample_times",
    "WEIGHTINGS",
    "T_SAMPLERS",
    "EnsembleData",
    "StreamingHMCData",
    "measured_spectrum",
    "TrainConfig",
    "Trainer",
    "Callback",
    "CheckpointHook",
    "History",
    "ProgressPrinter",
    "StopWhen",
]
