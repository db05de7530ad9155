"""``model.scope: grid``: one coupling-conditioned model per lattice size, trained by every
rank together on the HMC data of all grid points of that size.

The campaign then runs in three phases (each resumable, any rank count):

1. **HMC**: every point's pipeline runs to the end of its data stage (rgdist.campaign.point,
   points dealt to rank groups exactly as with ``scope: point``), which checkpoints the
   hand-over (configurations, spectrum, Monte Carlo reference) per point.
2. **Shared training**, per lattice size in grid order: the measured spectra of all points are
   gathered (the Gaussian-exact wrapper interpolates them, rgdist.models.conditioning); each
   group root owns its points' data and computes their gradients, and the gradients of all
   points are summed in point order (rgdist.train.grid.GridTrainer; the reduction is an
   allgather over all ranks). Point j of step k draws from the stream ``(seed, point key,
   "grid-train", k)``, the weights start from ``(seed, "grid", N, "init")``, so the model does
   not depend on the rank count. The shared state is checkpointed ONCE (not per rank) under
   ``grid/N<size>/`` (written by rank 0; checkpoint timing and pre-emption agreed over all
   ranks, as in a point). It also holds the spectra and the window.
3. **Sampling and correction** per point with the shared EMA model bound to the point's
   couplings (the point pipeline's sample/correct stages, unchanged). A point's training
   results are its own loss contribution per step and the shared step count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rgdist import faults
from rgdist.campaign import build
from rgdist.campaign.grid import shape_tag
from rgdist.lattice import Lattice, Phi4Action
from rgdist.seeding import torch_generator

__all__ = ["SharedModel", "train_shared", "run_points"]


@dataclass
class SharedModel:
    """The trained shared model of one lattice size: EMA weights, spectra table, window."""

    arrays: dict  # EMA model arrays (named)
    couplings: np.ndarray  # (P, 2) training couplings, point order
    spectra: np.ndarray  # (P, *shape) measured G of each training point
    losses: np.ndarray  # (steps, P) per-point losses
    steps: int

    def table(self):
        from rgdist.models.conditioning import SpectrumTable

        return SpectrumTable(self.couplings, self.spectra)

    def window(self):
        from rgdist.models.conditioning import CouplingWindow

        return CouplingWindow.of(self.couplings)

    def model_for(self, campaign, lattice, scheme, m2: float, lam: float, device,
                  allow_outside: bool = False):
        """(model bound to (m2, lam), its spectrum G): the EMA model, ready for sampling."""
        from rgdist.models import load_named_arrays
        from rgdist.models.conditioning import condition_model, set_couplings

        G = (self.table().at(m2, lam, allow_outside) if campaign.model.gaussian_exact
             else None)
        model = build.model_for(campaign.model, lattice, scheme,
                                torch.tensor(self.spectra[0]), torch.Generator(), device)
        condition_model(model, self.window())
        load_named_arrays(model, self.arrays)
        set_couplings(model, m2, lam, G, allow_outside=allow_outside)
        return model.eval(), (G if G is not None else torch.tensor(self.spectra[0]))

    def point_results(self, j: int) -> dict:
        return {"results/train/loss": np.ascontiguousarray(self.losses[:, j], dtype=np.float64),
                "results/train/steps": np.asarray(self.steps, dtype=np.int64)}


def _reduce(comm):
    def reduce(local: dict) -> dict:
        out = {}
        for part in comm.allgather_arrays({str(j): v for j, v in local.items()}):
            out.update({int(k): v for k, v in part.items()})
        return out
    return reduce


def train_shared(campaign, shape, points, jobs: dict, comm, store, *, device, preempt, log):
    """Phase 2 for the points of one lattice size (collective over ``comm``, all ranks).

    ``points``: the GridPoints of this size (grid order); ``jobs``: {point index: PointJob}
    of the points whose data this rank owns (their hand-over in ``job.arrays``). Returns the
    :class:`SharedModel`; raises ``Preempted`` (after saving) on an agreed signal."""
    from rgdist.campaign.point import Preempted
    from rgdist.models.conditioning import CouplingWindow, condition_model
    from rgdist.train import EnsembleData, TrainConfig, measured_spectrum
    from rgdist.train.grid import GridPointData, GridTrainer

    c, lat = campaign, Lattice(tuple(shape))
    couplings = np.array([[p.m2, p.lam] for p in points], dtype=np.float64)
    got = store.load_latest(all_ranks=True)
    if got is not None and got[2].get("done"):
        arrays = got[1]
        return _shared_from(arrays)
    # every point's measured spectrum, from the rank that owns its data
    local_G = {str(j): measured_spectrum(torch.as_tensor(jobs[p.index].arrays["data/configs"]),
                                         lat).numpy()
               for j, p in enumerate(points) if p.index in jobs}
    spectra_d = {}
    for part in comm.allgather_arrays(local_G):
        spectra_d.update(part)
    spectra = np.stack([spectra_d[str(j)] for j in range(len(points))])
    scheme = build.scheme_for(c.scheme, lat)
    seed = int(c.seed)
    model = build.model_for(c.model, lat, scheme, torch.tensor(spectra[0]),
                            torch_generator(seed, "grid", shape_tag(shape), "init", device=device),
                            device)
    condition_model(model, CouplingWindow.of(couplings))
    owned = []
    for j, p in enumerate(points):
        if p.index in jobs:
            data = torch.as_tensor(jobs[p.index].arrays["data/configs"]).to(device)
            owned.append(GridPointData(j, p.m2, p.lam, Phi4Action(p.m2, p.lam, lat.d),
                                       EnsembleData(data, augment=True),
                                       torch.tensor(spectra[j])))
    keys = [int(p.seed_key) for p in points]
    cfg = TrainConfig(**c.train.as_kwargs(), t_min=c.scheme.t_min)
    trainer = GridTrainer(model, scheme, owned, cfg, n_points=len(points),
                          streams=lambda j, k: torch_generator(seed, keys[j], "grid-train", k,
                                                               device=device),
                          reduce=_reduce(comm))
    tag = 0
    if got is not None:
        tag = int(got[0])
        trainer.load_state_dict({k[len("trainer/"):]: v for k, v in got[1].items()
                                 if k.startswith("trainer/")})
        log(f"[grid {shape_tag(shape)}] resumed shared training at step {trainer.step}")
    ck = c.checkpoint
    last = time.monotonic()

    def save(done: bool):
        nonlocal tag, last
        tag += 1
        arrays = {}
        if comm.is_root:
            arrays = {f"trainer/{k}": v for k, v in trainer.state_dict().items()}
            arrays.update(_shared_arrays(trainer, couplings, spectra) if done else {})
        store.save(tag, arrays, {"step": int(trainer.step), "done": bool(done)})
        last = time.monotonic()

    def report():  # the status display of the points whose data this rank owns
        for job in jobs.values():
            if job.ctx.report is not None:
                job.ctx.report({"stage": "train", "step": int(trainer.step), "shared": True,
                                "progress": min(1.0, trainer.step / max(cfg.steps, 1))})

    while trainer.step < cfg.steps:
        trainer.fit(until=trainer.step + 1, check_time=False)
        faults.maybe_kill("train_step")
        if trainer.step % 20 == 0 or trainer.step == cfg.steps:
            report()
        flags = comm.allreduce_max(np.array([bool(preempt.requested), trainer.out_of_time(),
                                             ck.every_seconds is not None
                                             and time.monotonic() - last >= ck.every_seconds],
                                            dtype=np.int32))
        by_steps = ck.every_steps > 0 and trainer.step % ck.every_steps == 0
        if flags[1]:
            log(f"[grid {shape_tag(shape)}] training stopped by its time budget at step "
                f"{trainer.step}")
            break
        if (flags[0] or flags[2] or by_steps) and trainer.step < cfg.steps:
            save(False)
            if flags[0]:
                raise Preempted("train")
    save(True)
    log(f"[grid {shape_tag(shape)}] shared training done: {trainer.step} steps on "
        f"{len(points)} points")
    return _shared_from(_shared_arrays(trainer, couplings, spectra))


def _shared_arrays(trainer, couplings, spectra) -> dict:
    out = {f"shared/ema/{k}": v for k, v in trainer.ema_arrays().items()}
    out["shared/couplings"] = couplings
    out["shared/spectra"] = spectra
    out["shared/losses"] = np.asarray(trainer.point_losses, dtype=np.float64).reshape(
        -1, couplings.shape[0])
    out["shared/steps"] = np.asarray(trainer.step, dtype=np.int64)
    return out


def _shared_from(arrays: dict) -> SharedModel:
    pre = "shared/ema/"
    return SharedModel(arrays={k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)},
                       couplings=np.asarray(arrays["shared/couplings"]),
                       spectra=np.asarray(arrays["shared/spectra"]),
                       losses=np.asarray(arrays["shared/losses"]),
                       steps=int(np.asarray(arrays["shared/steps"])))


def run_points(campaign, run_dir, points, mine, sub, comm, make_ctx, log, *, device,
               preempt) -> tuple[dict, dict]:
    """The three phases (module docstring) for this rank's points ``mine`` (indices into
    ``points``) on its group communicator ``sub``; collective over ``comm`` (all ranks).
    ``make_ctx(point, shared=None, shared_index=-1)`` builds a PointContext. Returns
    ({point_id: results}, scan arrays for results.h5 (rank 0; rgdist.campaign.scan)); raises
    Preempted (state saved) on an agreed signal."""
    from rgdist.campaign.point import PointJob, Preempted
    from rgdist.io.checkpoint import CheckpointStore

    jobs = {}
    pre = False
    try:
        for i in mine:  # phase 1: HMC data of my points
            job = PointJob(make_ctx(points[i]))
            job.run(stop_at="train")
            if sub.is_root:
                jobs[points[i].index] = job
    except Preempted:
        pre = True
    if comm.any_true(pre):
        raise Preempted("hmc")
    shapes = []
    for p in points:
        if tuple(p.shape) not in shapes:
            shapes.append(tuple(p.shape))
    shared = {}
    for shape in shapes:  # phase 2: one shared model per lattice size, all ranks
        group = [p for p in points if tuple(p.shape) == shape]
        store = CheckpointStore(run_dir / "grid" / shape_tag(shape), comm,
                                keep=campaign.checkpoint.keep)
        shared[shape] = (train_shared(campaign, shape, group, jobs, comm, store,
                                      device=device, preempt=preempt, log=log), group)
    results = {}
    try:
        for i in mine:  # phase 3: sampling (and correction) of my points with the shared model
            p = points[i]
            model, group = shared[tuple(p.shape)]
            j = [q.index for q in group].index(p.index)
            results[p.point_id] = PointJob(make_ctx(p, shared=model, shared_index=j)).run()
    except Preempted:
        pre = True
    if comm.any_true(pre):  # agreed before the next collective (the scan)
        raise Preempted("sample")
    from rgdist.campaign.scan import run_scan  # phase 4: the sample.couplings scan

    scan = run_scan(campaign, shapes, {s: m for s, (m, _) in shared.items()}, comm, device, log)
    return results, scan
