"""One grid point's pipeline: the run/resume/checkpoint/pre-emption loop over its stages.

The stages (``rgdist.campaign.stages``) are HMC data -> training -> sampling with flows ->
(optional) correction -> (optional) flow baseline. Each owns its work units and their random
streams, so a point's results do not depend on how many ranks share it (see each stage's
module). This driver
builds the current stage from its config section (``rgdist.campaign.build``), restores it
from the current checkpoint, steps it to its end, and hands its results to the next stage.

A checkpoint is taken every ``checkpoint.every_steps`` steps or ``every_seconds`` seconds
(whichever first; the decision is agreed over the point's ranks) and at every stage change;
a pre-emption signal agreed on over the ranks saves one and raises :class:`Preempted`. A
checkpoint holds this rank's unit arrays (``rank<r>/...``, re-dealt on resume, so any rank
count resumes any checkpoint) and, from the point's root, the hand-over of the stages done.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rgdist.campaign import build
from rgdist.campaign.stages import (BaselineStage, CorrectStage, HMCStage, SampleStage, StageEnv,
                                    TrainStage, strip)
from rgdist.lattice import Lattice, Phi4Action
from rgdist.seeding import torch_generator
from rgdist.train.data import measured_spectrum

STAGES = ("hmc", "train", "sample", "correct", "baseline", "done")
#: stages run only when their campaign section is enabled
OPTIONAL_STAGES = ("correct", "baseline")
#: stage names of layout-1 checkpoints
_LAYOUT1_STAGES = {"exact": "correct"}
_RANK_PREFIX = re.compile(r"^rank\d+/")


class Preempted(Exception):
    """Raised inside a point when a pre-emption signal was agreed on; state is saved."""


@dataclass
class PointContext:
    """What a point's pipeline needs from the runner."""

    campaign: object  # rgdist.campaign.spec.Campaign
    point: object  # rgdist.campaign.spec.GridPoint
    comm: object  # rgdist.parallel.comm.Comm of the ranks sharing this point
    store: object  # rgdist.io.checkpoint.CheckpointStore of this point
    device: torch.device
    preempt: object  # has .requested
    report: object = None  # callable(dict) for status/progress, or None
    log: object = None  # callable(str)
    timings: dict = field(default_factory=dict)
    #: model.scope grid: the trained rgdist.campaign.gridscope.SharedModel of the point's
    #: lattice size and the point's index in it (the train stage is then the shared one)
    shared: object = None
    shared_index: int = -1


class PointJob:
    """Runs (or resumes) one grid point to the 'done' stage and returns its results."""

    def __init__(self, ctx: PointContext):
        self.ctx = ctx
        c = ctx.campaign
        p = ctx.point
        self.lattice = Lattice(tuple(p.shape))
        self.action = Phi4Action(p.m2, p.lam, self.lattice.d)
        self.seed = int(c.seed)
        self.key = int(p.seed_key)  # stable: does not depend on the point's place in the grid
        self.dtype = torch.float64
        self.stage = "hmc"
        self.step = 0
        self.arrays: dict[str, np.ndarray] = {}  # shared state carried between stages
        self._tag = 0
        self._last_ckpt = time.monotonic()

    # ------------------------------------------------------------------ helpers
    def gen(self, *path) -> torch.Generator:
        return torch_generator(self.seed, self.key, *path, device=self.ctx.device)

    def _log(self, msg: str) -> None:
        if self.ctx.log is not None:
            self.ctx.log(f"[point {self.ctx.point.point_id}] {msg}")

    def _report(self, **kw) -> None:
        if self.ctx.report is not None and self.ctx.comm.is_root:
            self.ctx.report({"stage": self.stage, "step": self.step, **kw})

    def _due(self, force: bool = False) -> tuple[bool, bool]:
        """(checkpoint now?, pre-empted?) agreed over the point's ranks."""
        ck = self.ctx.campaign.checkpoint
        local_pre = bool(self.ctx.preempt.requested)
        by_steps = ck.every_steps > 0 and self.step > 0 and self.step % ck.every_steps == 0
        by_time = ck.every_seconds is not None and time.monotonic() - self._last_ckpt >= ck.every_seconds
        flags = np.array([local_pre, by_time], dtype=np.int32)
        flags = self.ctx.comm.allreduce_max(flags)
        pre = bool(flags[0])
        return (force or pre or by_steps or bool(flags[1])), pre

    def checkpoint(self, local_arrays, *, force: bool = False) -> None:
        """Collective: save when due; raise Preempted after saving if a signal arrived.

        ``local_arrays``: this rank's arrays, or a callable returning them (evaluated only
        when a checkpoint is due, so building the state costs nothing on other steps)."""
        due, pre = self._due(force)
        if not due:
            return
        if callable(local_arrays):
            local_arrays = local_arrays()
        r = self.ctx.comm.rank
        arrays = {f"rank{r}/{k}": v for k, v in local_arrays.items()}
        if self.ctx.comm.is_root:
            arrays.update(self.arrays)
        self._tag += 1
        attrs = {"stage": self.stage, "step": int(self.step), "point_id": self.ctx.point.point_id}
        t0 = time.perf_counter()
        self.ctx.store.save(self._tag, arrays, attrs)
        tm = self.ctx.timings
        tm["checkpoint_s"] = tm.get("checkpoint_s", 0.0) + time.perf_counter() - t0
        tm["checkpoints"] = tm.get("checkpoints", 0) + 1
        tm["checkpoint_bytes"] = tm.get("checkpoint_bytes", 0) + sum(
            np.asarray(v).nbytes for v in arrays.values())
        self._last_ckpt = time.monotonic()
        self._report(checkpoint=self._tag)
        if pre:
            raise Preempted(self.stage)

    def resume(self) -> bool:
        """Load the current checkpoint if there is one. Returns True when resumed."""
        got = self.ctx.store.load_latest(all_ranks=True)
        if got is None:
            return False
        tag, raw, attrs = got
        # per-rank arrays are keyed by work unit, so any rank count can take them over
        arrays = {(k.split("/", 1)[1] if _RANK_PREFIX.match(k) else k): v for k, v in raw.items()}
        self._tag = int(tag)
        self.stage = _LAYOUT1_STAGES.get(str(attrs["stage"]), str(attrs["stage"]))
        self.step = int(attrs["step"])
        self.arrays = arrays
        self._log(f"resumed from checkpoint {tag} at stage {self.stage}, step {self.step}")
        return True

    # ------------------------------------------------------------------ pipeline
    def run(self, stop_at: str | None = None) -> dict:
        """Run to the end (or until the pipeline reaches stage ``stop_at`` or a later one);
        returns the point's results (the hand-over so far in ``self.arrays`` when stopped)."""
        if not self.resume():
            self.stage, self.step = "hmc", 0
        last = STAGES.index(stop_at) if stop_at is not None else len(STAGES) - 1
        while self.stage != "done" and STAGES.index(self.stage) < last:
            t0, name = time.perf_counter(), self.stage  # the stage that runs (it then advances)
            self._run_stage()
            self.ctx.timings[name] = self.ctx.timings.get(name, 0.0) + time.perf_counter() - t0
        self._report(done=True)
        return strip("results", self.arrays)

    def _run_stage(self) -> None:
        """Build the current stage, restore it, step it to the end with checkpoints, and
        hand its results over to the next stage (checkpointed at the change)."""
        name = self.stage
        if name == "train" and self.ctx.shared is not None:
            self._shared_train()
            return
        stage = self._build(name)
        stage.restore(self.arrays, self.step)
        self.step = stage.step
        self.arrays = {k: v for k, v in self.arrays.items() if not k.startswith(stage.UNITS)}
        while not stage.done:
            stage.advance()
            self.step = stage.step
            if not stage.done:
                self.checkpoint(stage.state)
        keep = stage.results()
        if name == "sample" and self.ctx.campaign.correct.enabled:
            # the correction rebuilds the model from the data and the trainer state
            keep.update({k: v for k, v in self.arrays.items()
                         if k.startswith("trainer/") or k in ("data/configs", "hmc/step_size")})
        elif name == "train":
            keep = {**self.arrays, **keep}
        self.stage, self.step, self.arrays = self._next_stage(name), 0, keep
        self._report(progress=0.0)
        self.checkpoint({}, force=True)

    def _next_stage(self, name: str) -> str:
        """The stage after ``name``, skipping the optional ones whose section is off."""
        i = STAGES.index(name) + 1
        while STAGES[i] in OPTIONAL_STAGES and not getattr(self.ctx.campaign, STAGES[i]).enabled:
            i += 1
        return STAGES[i]

    def _shared_train(self) -> None:
        """scope grid: the point's train stage is the shared training (done before this);
        keep the point's own loss contribution and move on to sampling."""
        c = self.ctx.campaign
        scheme = build.scheme_for(c.scheme, self.lattice)
        # the point's measured spectrum, as the shared training measured it
        self._diagnostics(scheme, torch.tensor(self.ctx.shared.spectra[self.ctx.shared_index]))
        self.arrays = {**self.arrays, **self.ctx.shared.point_results(self.ctx.shared_index)}
        self.stage, self.step = "sample", 0
        self._report(progress=0.0)
        self.checkpoint({}, force=True)

    # ---- building the stages from their config sections ---------------------------------
    def _env(self) -> StageEnv:
        return StageEnv(lattice=self.lattice, action=self.action, comm=self.ctx.comm,
                        device=self.ctx.device, streams=self.gen,
                        report=lambda **kw: self._report(**kw), log=self._log, dtype=self.dtype)

    def _build(self, name: str):
        c, env = self.ctx.campaign, self._env()
        if name == "hmc":
            return HMCStage(c.hmc, env, n_bins=c.measure.n_bins, series=c.measure.series)
        if name == "baseline":  # from the action alone: no data, no score model
            return BaselineStage(c.baseline, env, carry=self.arrays, n_bins=c.measure.n_bins)
        if self.ctx.shared is not None:
            scheme = build.scheme_for(c.scheme, self.lattice)
            model, G = self.ctx.shared.model_for(c, self.lattice, scheme, self.ctx.point.m2,
                                                 self.ctx.point.lam, self.ctx.device)
            return self._build_sampling(name, model, scheme, G)
        trainer, scheme, G = self._trainer()
        if name == "train":
            d = self._diagnostics(scheme, G)  # before any training: a bad scheme stops here
            self._log(f"leftover A_T^2 G/Sigma_T max {float(d['leftover/max']):.3g} mean "
                      f"{float(d['leftover/mean']):.3g}, prior dynamic range "
                      f"{float(d['leftover/dynamic_range']):.3g}, sampler G2 bias "
                      f"{float(d['sampler_bias/max_discretization']):.3g}")
            return TrainStage(trainer, env)
        trainer.load_state_dict(strip("trainer", self.arrays))
        return self._build_sampling(name, trainer.ema_model(), scheme, G)

    def _build_sampling(self, name: str, model, scheme, G):
        """The sample or correct stage of ``model`` (EMA weights) on the point's spectrum G."""
        c, env = self.ctx.campaign, self._env()
        if name == "sample":
            from rgdist.campaign.diagnostics import nonfinite_message

            model.eval()
            return SampleStage(c.sample, env, model=model, scheme=scheme, G=G, carry=self.arrays,
                               n_bins=c.measure.n_bins, record_times=c.measure.record_times,
                               t_min=c.scheme.t_min, weighting=c.train.weighting,
                               zero_mode_weight=c.train.zero_mode_weight,
                               diagnostics=self._diagnostics(scheme, G),
                               nonfinite=lambda ci: nonfinite_message(c, scheme, G, c.sample.solver, ci))
        e = c.correct
        hmc_params = build.hybrid_hmc_params(c.hmc, self.arrays["hmc/step_size"]) if e.hmc_trajectories else None
        return CorrectStage(e, env, model=model, scheme=scheme, G=G, carry=self.arrays,
                            grid=c.sample.grid, t_min=c.scheme.t_min, n_bins=c.measure.n_bins,
                            hmc_params=hmc_params)

    def _trainer(self):
        """(trainer, scheme, G): the model and trainer built from the data in the hand-over."""
        c = self.ctx.campaign
        scheme = build.scheme_for(c.scheme, self.lattice)
        data = torch.as_tensor(self.arrays["data/configs"])
        G = measured_spectrum(data, self.lattice)
        model = build.model_for(c.model, self.lattice, scheme, G, self.gen("init"), self.ctx.device)
        trainer = build.trainer_for(c.train, c.scheme.t_min, model, scheme, data, self.action, G,
                                    self.gen("train"), self.ctx.device)
        return trainer, scheme, G

    def _diagnostics(self, scheme, G, check: bool = True) -> dict:
        """Leftover, dynamic range and sampler bias on the measured spectrum G (ConfigError,
        exit 2, when one exceeds its limit; see rgdist.campaign.diagnostics)."""
        from rgdist.campaign.diagnostics import point_diagnostics, point_where

        return point_diagnostics(self.ctx.campaign, scheme, G, point_where(self.ctx.point), check=check)


