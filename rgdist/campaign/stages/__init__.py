"""The stages of a grid point's pipeline (HMC data, training, sampling with flows, the
optional correction, the optional flow baseline), each a small object with the interface of
:class:`Stage`."""
from rgdist.campaign.stages.base import Stage, StageEnv, prefixed, strip
from rgdist.campaign.stages.baseline import BASELINE_OBSERVABLES, BaselineStage
from rgdist.campaign.stages.correct import CORRECT_OBSERVABLES, CorrectStage
from rgdist.campaign.stages.hmc import HMCStage
from rgdist.campaign.stages.sample import SampleStage
from rgdist.campaign.stages.train import TrainStage

__all__ = ["Stage", "StageEnv", "prefixed", "strip", "HMCStage", "TrainStage", "SampleStage",
           "CorrectStage", "CORRECT_OBSERVABLES", "BaselineStage", "BASELINE_OBSERVABLES"]
