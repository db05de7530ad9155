"""The interface every stage of a grid point's pipeline has, and what it is given.

A stage is a small object built from one config section (plus the few scalars of other
sections it needs, passed explicitly) and a :class:`StageEnv`: the point's lattice and
action, the communicator of the ranks sharing the point, the device, and the point's random
streams. It knows nothing about files, checkpoint timing or signals; the point driver
(:mod:`rgdist.campaign.point`) owns those. The driver calls::

    stage.restore(arrays, step)   # once: the arrays of the current checkpoint (step > 0) or
                                  # the previous stage's hand-over (step == 0)
    while not stage.done:
        stage.advance()           # one step (a trajectory, an optimizer step, a chunk round)
        ... stage.state()         # this rank's resumable state as named arrays, when due
    carry = stage.results()       # collective: what the next stage needs, named arrays

``arrays`` hold the hand-over of the previous stages (shared by every rank of the point)
and, on a resume, this stage's own unit arrays (keys under ``UNITS``): a rank restores the
units it owns under the current rank count, so any rank count can resume any checkpoint.
The driver removes the ``UNITS`` keys from the hand-over it carries along.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


def prefixed(prefix: str, d: dict) -> dict:
    """``{prefix/key: value}``."""
    return {f"{prefix}/{k}": v for k, v in d.items()}


def strip(prefix: str, d: dict) -> dict:
    """The entries of ``d`` under ``prefix/``, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in d.items() if k.startswith(prefix + "/")}


@dataclass
class StageEnv:
    """What every stage of one grid point gets.

    ``streams(*path)``: the point's torch generator for a stream label (the labels are part of
    the results: see each stage); ``report(**info)``: progress to the status display (point
    root only; may be a no-op); ``log(text)``: one line to the run log.
    """

    lattice: object  # rgdist.lattice.Lattice
    action: object  # rgdist.lattice.Phi4Action
    comm: object  # rgdist.parallel.comm.Comm of the ranks sharing the point
    device: torch.device
    streams: Callable[..., torch.Generator]
    report: Callable[..., None]
    log: Callable[[str], None]
    dtype: torch.dtype = torch.float64

    def my_units(self, n_units: int) -> list[int]:
        """The work units this rank owns: round-robin over the point's ranks."""
        return list(range(self.comm.rank, n_units, self.comm.size))


class Stage:
    """Base class: a stage with ``total`` steps; subclasses implement the hooks."""

    name: str = ""
    #: key prefix of the stage's own (per-unit, checkpoint-only) arrays
    UNITS: str = "\0"

    def __init__(self, env: StageEnv):
        self.env = env
        self.step = 0

    # -- interface -------------------------------------------------------------------
    @property
    def total(self) -> int:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.step >= self.total

    def progress(self) -> float:
        """Fraction of the stage done, in [0, 1]."""
        return min(1.0, self.step / max(self.total, 1))

    def restore(self, arrays: dict[str, np.ndarray], step: int) -> None:
        self.step = int(step)

    def advance(self) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """This rank's resumable state (named arrays; empty when there is none)."""
        return {}

    def results(self) -> dict[str, np.ndarray]:
        """Collective: the hand-over of this stage (named arrays, the same on every rank)."""
        raise NotImplementedError
