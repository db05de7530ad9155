"""Trainer callbacks: the training loop stays plain; progress, checkpoints and stops live here.

Hooks (all optional, no-ops by default):
    on_train_start(trainer)
    on_step_end(trainer, step, loss)        after every successful optimizer step
    on_log(trainer, step, stats)            every ``log_every`` steps; stats: loss (window mean),
                                            lr, grad_norm, steps_per_s
    on_checkpoint(trainer, step)            every ``checkpoint_every`` steps
    on_rollback(trainer, step, reason)      after the NaN guard restored the last good state
    on_train_end(trainer, reason)           reason: "done" | "time" | "stopped"
A callback may call ``trainer.request_stop()``; the loop ends after the current step.
"""
from __future__ import annotations

import sys
from typing import Callable


class Callback:
    def on_train_start(self, trainer) -> None:
        pass

    def on_step_end(self, trainer, step: int, loss: float) -> None:
        pass

    def on_log(self, trainer, step: int, stats: dict) -> None:
        pass

    def on_checkpoint(self, trainer, step: int) -> None:
        pass

    def on_rollback(self, trainer, step: int, reason: str) -> None:
        pass

    def on_train_end(self, trainer, reason: str) -> None:
        pass


class ProgressPrinter(Callback):
    """Print one line per log interval (give it to rank 0 only)."""

    def __init__(self, stream=None, prefix: str = "train"):
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix

    def on_log(self, trainer, step: int, stats: dict) -> None:
        print(f"{self.prefix} step {step}/{trainer.config.steps} loss {stats['loss']:.5g} "
              f"lr {stats['lr']:.3g} |g| {stats['grad_norm']:.3g} "
              f"{stats['steps_per_s']:.2f} it/s", file=self.stream, flush=True)

    def on_rollback(self, trainer, step: int, reason: str) -> None:
        print(f"{self.prefix} step {step}: {reason}; rolled back to step {trainer.step}, "
              f"lr factor {trainer.lr_factor:g}", file=self.stream, flush=True)


class CheckpointHook(Callback):
    """Call ``save(state, step)`` with ``trainer.state_dict()`` at every checkpoint interval
    and at the end of training (the io layer supplies ``save``; it writes atomically)."""

    def __init__(self, save: Callable[[dict, int], None], at_end: bool = True):
        if not callable(save):
            raise ValueError("save must be a callable (state_dict, step) -> None")
        self.save, self.at_end = save, at_end
        self.last_saved: int | None = None

    def _save(self, trainer) -> None:
        if self.last_saved != trainer.step:
            self.save(trainer.state_dict(), trainer.step)
            self.last_saved = trainer.step

    def on_checkpoint(self, trainer, step: int) -> None:
        self._save(trainer)

    def on_train_end(self, trainer, reason: str) -> None:
        if self.at_end:
            self._save(trainer)


class History(Callback):
    """Keep the logged statistics in memory: list of (step, stats)."""

    def __init__(self):
        self.records: list[tuple[int, dict]] = []

    def on_log(self, trainer, step: int, stats: dict) -> None:
        self.records.append((step, dict(stats)))


class StopWhen(Callback):
    """Request a stop when ``predicate()`` becomes true (e.g. a pre-emption signal flag)."""

    def __init__(self, predicate: Callable[[], bool]):
        self.predicate = predicate

    def on_step_end(self, trainer, step: int, loss: float) -> None:
        if self.predicate():
            trainer.request_stop()
