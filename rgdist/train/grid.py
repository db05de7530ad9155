"""Data-parallel training of one coupling-conditioned model over a grid of couplings.

Step k of :class:`GridTrainer` (P grid points, point i with couplings (m2_i, lam_i), action
S_i, data D_i and spectrum G_i):

    for each point i this process owns (ascending i):
        bind the model to (m2_i, lam_i, G_i)                       (models.conditioning)
        loss_i = the configured objective on a batch of D_i / S_i, all randomness from the
                 stream ``streams(i, k)`` (a generator that depends on (i, k) only)
        g_i = d loss_i / d theta                                   (float64 vector)
    {g_j, loss_j for every j} = reduce({i: (loss_i, g_i) for the owned i})
    g = (sum_{j = 0..P-1} g_j) / P, summed in index order;  loss = mean_j loss_j
    clip, NaN guard, Adam, EMA: exactly as rgdist.train.Trainer.

The owned points, the stream of each (i, k) and the order of the sum do not depend on how the
points are dealt out, so the update is bitwise the same for any number of processes, and the
state (model, EMA, Adam, counters) is one shared object: no per-point or per-process state
(the streams are re-derived from (i, k) on a resume). ``reduce`` is the only collective; the
caller supplies it (the campaign passes an allgather over its communicator; serially it is
the identity), so this module knows nothing about MPI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from rgdist.models.conditioning import is_conditioned, set_couplings
from rgdist.train.trainer import Trainer, TrainConfig

__all__ = ["GridPointData", "GridTrainer", "serial_reduce"]


@dataclass
class GridPointData:
    """One training point: its global ``index``, couplings, action, data source and G."""

    index: int
    m2: float
    lam: float
    action: object
    data: object  # has sample(batch, generator), or None for reverse KL
    spectrum: torch.Tensor


def serial_reduce(local: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The reduction of one process that owns every point."""
    return dict(local)


class _PerPointData:
    """Placeholder data source: a grid trainer draws from each point's own source."""

    def sample(self, batch, generator):
        raise RuntimeError("a GridTrainer samples each point's own data source")


class GridTrainer(Trainer):
    """One shared conditioned model trained on ``n_points`` grid points, of which this
    process owns ``points`` (module docstring). ``streams(i, k)`` -> torch.Generator;
    ``reduce`` maps {i: vector} of the owned points to {j: vector} of all points."""

    def __init__(self, model, scheme, points: list[GridPointData], config: TrainConfig, *,
                 n_points: int, streams: Callable[[int, int], torch.Generator],
                 reduce: Callable[[dict], dict] = serial_reduce,
                 callbacks=()):
        if not is_conditioned(model):
            raise ValueError("a GridTrainer needs a coupling-conditioned model "
                             "(rgdist.models.conditioning.condition_model)")
        if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
            raise ValueError(f"n_points must be an integer >= 1, got {n_points!r}")
        idx = [p.index for p in points]
        if idx != sorted(set(idx)) or any(not 0 <= i < n_points for i in idx):
            raise ValueError(f"points must have distinct ascending indices in [0, {n_points}), "
                             f"got {idx}")
        action = points[0].action if points else None
        self._streams, self._reduce = streams, reduce
        self.points, self.n_points = list(points), n_points
        super().__init__(model, scheme, _PerPointData(), config, torch.Generator(),
                         callbacks=callbacks, action=action if action is not None else _no_action,
                         prior_G=points[0].spectrum if points else None)
        self._base_generator = self.generator
        self.point_losses: list[list[float]] = []  # per step: loss of every point

    # ------------------------------------------------------------------ one step
    def _point_gradient(self, p: GridPointData) -> np.ndarray:
        """[loss_i, g_i...] of point ``p`` at the current step (float64)."""
        cfg = self.config
        set_couplings(self.model, p.m2, p.lam, p.spectrum)
        self.generator = self._streams(p.index, self.step)
        self.action, self.prior_G = p.action, p.spectrum.to(self.device)
        phi0 = None
        if cfg.objective != "reverse_kl":
            phi0 = p.data.sample(cfg.batch_size, self.generator).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.compute_loss(phi0)
        loss.backward()
        parts = [np.array([float(loss.detach())])]
        for q in self.params:
            g = q.grad if q.grad is not None else torch.zeros_like(q)
            parts.append(g.detach().to(torch.float64).cpu().numpy().reshape(-1))
        return np.concatenate(parts)

    def train_step(self) -> float | None:
        self._start_step()
        local = {p.index: self._point_gradient(p) for p in self.points}
        self.generator = self._base_generator
        every = self._reduce(local)
        if sorted(every) != list(range(self.n_points)):
            raise RuntimeError(f"the reduction returned points {sorted(every)}, expected all "
                               f"{self.n_points}")
        total = np.array(every[0], dtype=np.float64, copy=True)
        for j in range(1, self.n_points):
            total += every[j]
        total /= self.n_points
        pos = 1
        self.optimizer.zero_grad(set_to_none=True)
        for q in self.params:
            n = q.numel()
            q.grad = torch.from_numpy(total[pos:pos + n].reshape(q.shape)).to(q)
            pos += n
        loss = self._finish_step(float(total[0]))
        if loss is None:  # rolled back: forget the per-point losses of the undone steps
            del self.point_losses[self.step:]
        else:
            self.point_losses.append([float(every[j][0]) for j in range(self.n_points)])
        return loss

    # ------------------------------------------------------------------ state
    def _neutral_spectrum(self) -> None:
        """Set the Gaussian-exact spectrum buffers to 1: they are bound per point and not
        part of the shared state, so a saved state must not depend on the last point."""
        from rgdist.models.effective import GaussianExactScore

        with torch.no_grad():
            for m in self.model.modules():
                if isinstance(m, GaussianExactScore):
                    m.data_spectrum = torch.ones_like(m.data_spectrum)  # not in place

    def state_dict(self) -> dict[str, np.ndarray]:
        self._neutral_spectrum()
        d = super().state_dict()
        d["point_losses"] = np.asarray(self.point_losses, dtype=np.float64).reshape(
            len(self.point_losses), self.n_points)
        return d

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict({k: v for k, v in d.items() if k != "point_losses"})
        self.point_losses = [list(map(float, r)) for r in np.asarray(d["point_losses"])]

    def ema_arrays(self) -> dict[str, np.ndarray]:
        self._neutral_spectrum()
        return super().ema_arrays()


def _no_action(phi):  # a process that owns no point never evaluates an action
    raise RuntimeError("this process owns no grid point")
