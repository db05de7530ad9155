"""Campaign runner: split the grid over MPI ranks, run each point's pipeline, write results.

Assignment: with R ranks and P points, ``n_groups = min(R, P)`` groups; rank r is in group
``r % n_groups`` and the group owns the points with ``index % n_groups == group``. The ranks
of a group share each of its points (sub-communicator). Which rank computes what never
changes a number (see :mod:`rgdist.campaign.point`), so a campaign gives bitwise identical
results for any rank count, and can be resumed with a different one.

The run directory (layout, creation, validation) is :mod:`rgdist.campaign.rundir`.  At the end
of a complete run :func:`run_from_cli` returns the end-of-run report data (the results, the
campaign and its own aggregate: crossings, chi peaks, critical line, plots);
:func:`rgdist.campaign.report.format_run_report` turns it into text.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from rgdist import exitcodes
from rgdist.campaign.rundir import (
    RESOLVED,
    check_new_run_dir,
    is_run_dir,
    load_run_dir,
    prepare_run_dir,
    read_selection,
)
from rgdist.errors import ConfigError

__all__ = ["RESOLVED", "assign_points", "select_points", "load_run_dir", "run_campaign",
           "run_from_cli"]


def assign_points(n_points: int, rank: int, size: int, ranks_per_point="auto") -> tuple[int, list[int]]:
    """(group, point indices of that group) for ``rank`` of ``size``.

    ``ranks_per_point="auto"``: as many groups as points (at most one per rank); an integer
    k asks for groups of at least k ranks (``size // k`` groups).
    """
    if ranks_per_point == "auto":
        n_groups = max(1, min(size, n_points))
    else:
        n_groups = max(1, min(n_points, size // int(ranks_per_point)))
    group = rank % n_groups
    return group, [i for i in range(n_points) if i % n_groups == group]


def select_points(points: list, selector: str | None) -> list:
    """``--points i/K``: the points whose index % K == i (for SLURM job arrays)."""
    if not selector:
        return points
    try:
        i, k = (int(x) for x in selector.split("/"))
    except ValueError:
        raise ConfigError("--points", f"must look like i/K with integers 0 <= i < K, got {selector!r}") from None
    if k < 1 or not 0 <= i < k:
        raise ConfigError("--points", f"must satisfy 0 <= i < K, got {selector!r}")
    return [p for p in points if p.index % k == i]


def _check_selection(campaign, selector) -> None:
    """A grid model is trained on all points of a size in one job: no job arrays."""
    if selector and campaign.model.scope == "grid":
        raise ConfigError("--points", "model.scope: grid trains one model on all points of a "
                                      "lattice size in one job; --points (job arrays) needs "
                                      "model.scope: point")


class RankLog:
    def __init__(self, path: Path | None, rank: int):
        self.rank = rank
        self.fh = open(path, "a", buffering=1) if path is not None else None

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} rank {self.rank}: {msg}"
        if self.fh is not None:
            self.fh.write(line + "\n")

    def close(self):
        if self.fh is not None:
            self.fh.close()


def run_campaign(campaign, run_dir: Path, comm, *, campaign_file=None, points_selector=None,
                 preempt=None, progress=True) -> dict:
    """Run (or continue) ``campaign`` in ``run_dir`` on ``comm``; collective.

    Returns ``{"status": "done"|"preempted", "results": {point_id: arrays}}`` on every rank.
    """
    from rgdist.campaign.point import PointContext, PointJob, Preempted
    from rgdist.campaign.progress import ProgressReporter
    from rgdist.io.checkpoint import CheckpointStore
    from rgdist.io.results import write_results
    from rgdist.parallel.device import choose_device, configure_threads

    run_dir = Path(run_dir)
    _check_selection(campaign, points_selector)
    prepare_run_dir(campaign, campaign_file, run_dir, comm, points_selector)
    points = select_points(campaign.points(), points_selector)
    group, mine = assign_points(len(points), comm.rank, comm.size, campaign.resources.ranks_per_point)
    sub = comm.split(group, comm.rank)
    device = choose_device(comm.local_rank, campaign.resources.device)
    threads = campaign.resources.threads
    if threads == "auto":
        threads = configure_threads(comm.local_size)
    else:
        import torch

        torch.set_num_threads(int(threads))
    log = RankLog(run_dir / "logs" / f"rank-{comm.rank:04d}.log", comm.rank)
    log(f"start: {comm.size} ranks, group {group} of {min(comm.size, len(points))}, "
        f"points {[points[i].point_id for i in mine]}, device {device}, threads {threads}")
    reporter = ProgressReporter(run_dir, [p.point_id for p in points], enabled=progress and comm.is_root)
    status = "done"
    results: dict = {}
    scan: dict = {}  # model.scope grid: the sample.couplings scan (rank 0)
    timings: dict = {}
    t_start = time.perf_counter()
    def make_ctx(p, shared=None, shared_index=-1):
        store = CheckpointStore(run_dir / "points" / p.point_id, sub, keep=campaign.checkpoint.keep)
        return PointContext(campaign=campaign, point=p, comm=sub, store=store, device=device,
                            preempt=preempt, report=reporter.callback(p.point_id), log=log,
                            timings=timings.setdefault(p.point_id, {}), shared=shared,
                            shared_index=shared_index)

    try:
        if campaign.model.scope == "grid":
            from rgdist.campaign.gridscope import run_points

            try:
                results, scan = run_points(campaign, run_dir, points, mine, sub, comm, make_ctx,
                                           log, device=device, preempt=preempt)
            except Preempted as exc:
                log(f"pre-empted during the {exc} phase of the grid model; checkpoint written")
                status = "preempted"
        for i in (mine if campaign.model.scope == "point" else ()):
            p = points[i]
            try:
                results[p.point_id] = PointJob(make_ctx(p)).run()
            except Preempted:
                log(f"pre-empted during point {p.point_id}; checkpoint written")
                status = "preempted"
                break
            reporter.tick()
    except Exception as exc:
        if sub.is_root:
            reporter.error(points[mine[0]].point_id if mine else "?", f"{type(exc).__name__}: {exc}")
        log("error: " + traceback.format_exc())
        raise
    _write_timings(run_dir, comm.rank, timings, time.perf_counter() - t_start)
    # agree on the outcome; only a complete campaign writes results
    any_pre = comm.any_true(status == "preempted")
    if any_pre:
        reporter.close()
        log.close()
        return {"status": "preempted", "results": results}
    owned = {pid: arr for pid, arr in results.items()} if sub.is_root else {}
    all_results = write_results(run_dir / campaign.output.results, campaign, points, owned, comm,
                                extra=scan)
    reporter.close()
    log("campaign complete")
    log.close()
    return {"status": "done", "results": all_results}


def _write_timings(run_dir: Path, rank: int, timings: dict, wall: float) -> None:
    """Per-rank wall-clock accounting (kept out of results.h5, which is reproducible)."""
    from rgdist.io.atomic import atomic_write_json

    path = run_dir / "logs" / f"timings-rank{rank:04d}.json"
    atomic_write_json(path, {"wall_s": wall, "points": timings})


def run_from_cli(campaign_file=None, run_dir=None, resume=False, points=None, progress=True) -> dict:
    """`rgdist run` / `rgdist resume` without printing: lock, signals, guarded MPI execution.

    Returns on every rank ``{"exit_code", "status": "done"|"preempted", "run_dir", "root"
    (whether this is rank 0), "report"}``; ``report`` (root rank of a complete run, else None) is the end-of-run report data
    ``{"results", "campaign", "aggregate"}`` -- ``aggregate`` is the campaign's own
    :func:`rgdist.campaign.aggregate.aggregate` (written into the run directory) -- for
    :func:`rgdist.campaign.report.format_run_report`.
    """
    from rgdist.campaign.signals import PreemptionFlag
    from rgdist.campaign.spec import load_campaign
    from rgdist.io.lock import RunLock
    from rgdist.parallel.comm import world

    comm = world()
    err = None
    campaign = None
    try:
        if resume:
            if run_dir is None:
                raise ConfigError("run_dir", "resume needs a run directory")
            campaign = load_run_dir(Path(run_dir))
        else:
            if campaign_file is None:
                raise ConfigError("campaign", "no campaign file given (rgdist.cli runs the packaged default)")
            campaign = load_campaign(campaign_file)
            if run_dir is None:
                run_dir = campaign.output.dir
            if is_run_dir(run_dir):
                resume = True
            else:
                check_new_run_dir(run_dir)
        if points is None and resume:
            points = read_selection(run_dir)
        if points is not None:
            select_points(campaign.points(), points)
            _check_selection(campaign, points)
        from rgdist.campaign.diagnostics import precheck

        precheck(campaign)  # what no data can repair, before anything is written
    except ConfigError as exc:
        err = str(exc)
    errs = comm.allgather(err)
    if any(errs):
        raise ConfigError("", next(e for e in errs if e))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir) if comm.is_root else None
    lock_err = None
    if lock is not None:
        try:
            lock.acquire()
        except Exception as exc:  # RunLockedError
            lock_err = str(exc)
    lock_err = comm.bcast(lock_err)
    if lock_err is not None:
        from rgdist.errors import RunLockedError

        raise RunLockedError(lock_err)
    try:
        with PreemptionFlag() as flag:
            from rgdist.parallel.comm import run_guarded

            out = run_guarded(lambda: run_campaign(
                campaign, run_dir, comm, campaign_file=None if resume else campaign_file,
                points_selector=points, preempt=flag, progress=progress), comm)
    finally:
        if lock is not None:
            lock.release()
    if out["status"] == "preempted":
        return {"exit_code": exitcodes.REQUEUE, "status": "preempted", "run_dir": run_dir,
                "root": comm.is_root, "report": None}
    report = None
    if comm.is_root:
        from rgdist.campaign.aggregate import aggregate

        # the campaign's own phase diagram: crossings, chi peaks, critical line, plots
        report = {"results": out["results"], "campaign": campaign,
                  "aggregate": aggregate([str(run_dir)], None)}
    return {"exit_code": exitcodes.OK, "status": "done", "run_dir": run_dir, "root": comm.is_root,
            "report": report}
