"""Stage 2: training the score model on the HMC data.

Every rank of the point trains the same model from the same stream (``"init"`` for the
weights, ``"train"`` for batches and times), so no reduction can change the numbers; the
point's root checkpoints the trainer state. One step is one optimizer step of
:meth:`rgdist.train.Trainer.fit`; the time budget (``train.max_seconds``) is agreed over the
point's ranks after every step. The hand-over: the trainer state (model, EMA, optimizer,
streams) and the loss history.
"""
from __future__ import annotations

import numpy as np

from rgdist import faults
from rgdist.campaign.stages.base import Stage, StageEnv, prefixed, strip
from rgdist.train.callbacks import Callback


class _Report(Callback):
    """Fault site and progress report after every optimizer step."""

    def __init__(self, stage: "TrainStage"):
        self.stage = stage

    def on_step_end(self, trainer, step: int, loss: float) -> None:
        faults.maybe_kill("train_step")
        steps = trainer.config.steps
        if step % 20 == 0 or step == steps:
            self.stage.env.report(progress=min(1.0, step / steps), loss=float(loss))


class TrainStage(Stage):
    name = "train"
    UNITS = "trainer/"

    def __init__(self, trainer, env: StageEnv):
        super().__init__(env)
        self.trainer = trainer
        trainer.callbacks.append(_Report(self))
        self.stopped = False

    @property
    def total(self) -> int:
        return self.trainer.config.steps

    @property
    def done(self) -> bool:
        return self.stopped or self.step >= self.total

    def restore(self, arrays, step) -> None:
        super().restore(arrays, step)
        if self.step > 0:
            self.trainer.load_state_dict(strip("trainer", arrays))
            self.step = int(self.trainer.step)

    def advance(self) -> None:
        t = self.trainer
        t.fit(until=t.step + 1, check_time=False)
        self.step = int(t.step)
        if self.env.comm.any_true(t.out_of_time()):
            self.env.log(f"training stopped by its time budget at step {self.step}")
            self.stopped = True

    def state(self) -> dict:
        if not self.env.comm.is_root:
            return {}
        return prefixed("trainer", self.trainer.state_dict())

    def results(self) -> dict:
        t = self.trainer
        return {**prefixed("trainer", t.state_dict()),
                "results/train/loss": np.asarray(t.loss_history, dtype=np.float64),
                "results/train/steps": np.asarray(self.step, dtype=np.int64)}
