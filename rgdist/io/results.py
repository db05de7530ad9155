"""The campaign results file (layout version 2), written collectively at the end of a run.

Layout::

    /                         attrs: rgdist_layout=2, rgdist_version, schema_version,
                                     campaign (resolved configuration as JSON text), n_points
    /points/<point_id>/       attrs: index, shape, d, m2, lam, kappa, lam_h, point_id
        estimates/<source>/<name>   float64 [value, error]   (source: hmc | diffusion)
        estimates/<source>/g2       float64 (2, *shape): G2(p) and its error, fftn order
        acc_<source>/...            the raw mergeable accumulators (per-bin power sums)
        train/loss, train/steps     training loss history
        hmc/acceptance              per HMC block
        spectrum                    measured G2(p) of the training data
        leftover/...                A_T^2 G / Sigma_T at the final time for G = spectrum:
            ratio                   per mode (fftn order; inf on frozen modes)
            max, mean               over the noised modes; limit (scheme.max_leftover, nan: none)
            dynamic_range           max/min of the prior spectrum over the noised modes
            n_frozen                modes the scheme never noises
        sampler_bias/...            the sampler's G2 bias on Gaussian data of that spectrum with
                                    the exact score (closed form, rgdist.sample.audit):
            discretization          per mode, V / V_exact - 1 (solver, grid and step count)
            max_discretization      max |.| over the noised modes; limit (sample.max_bias)
            max_total, mean_total   of V / G - 1 (adds the truncation at t_min)
        correct/...                 only with campaign correct.method != off:
            ess_fraction            ESS/n of the importance weights w = exp(-S - log q)
            n_proposals, nfe, vjp, n_nonpositive_det   proposal count and cost per proposal
            reweight/<name>         float64 [value, error], self-normalized reweighting
            acceptance              independence-MH acceptance (method mh | both)
            mh_steps, mh_burn_in    recorded and discarded MH steps
            mh_tau_int/<series>     [tau_int, error] of m, abs_m, m2, m4 (MH steps)
            mh_ess/<series>         N / (2 tau_int)
            mh_hmc_acceptance       hybrid only (correct.hmc_trajectories > 0)
            mh/<name>               float64 [value, error] of the MH chains
                                    (<name>: abs_m, m2, chi, binder, xi2)
        series/...                  only with campaign measure.series: true, per kept HMC
                                    configuration (ordered chain, time): phi2_sum
                                    (sum_x phi^2), m (M), g2_p1 (n, d), chain (int64)
        baseline/...                only with a campaign section baseline: (the flow baseline,
                                    rgdist.campaign.stages.baseline):
            flow/t, flow/<name>     observables along its own flow time tau in [0, 1]
                                    (FlowResult arrays, (2, K[, *shape]))
            ess_fraction, pareto_k  of the importance weights of its n_samples tau = 1 draws
            n_samples, nfe_per_sample
            reweight/<name>         float64 [value, error], self-normalized reweighting
            train/loss, train/ess, train/steps, train/skipped   reverse-KL history
        <extra>/...                 e.g. flow/... written by later stages

Every dataset carries its sha256 as attribute ``sha256``. Nothing time- or host-dependent is
stored here, so two runs of the same campaign give identical contents (timings and logs
live in the run directory's logs/ and status/).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rgdist import __version__
from rgdist.io.h5 import dataset_names, open_h5, read_arrays, read_attrs, write_attrs, write_owned
from rgdist.lattice import Lattice
from rgdist.measure import ObservableAccumulator

SOURCES = ("hmc", "diffusion")


def estimates_from_arrays(arrays: dict, shape) -> dict[str, dict]:
    """{source: {name: (value, err)}} from a point's raw accumulator arrays."""
    lat = Lattice(tuple(shape))
    out = {}
    for src in SOURCES:
        pre = f"acc_{src}/"
        acc_arrays = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
        if acc_arrays:
            out[src] = ObservableAccumulator.from_arrays(lat, acc_arrays).estimate()
    return out


def _estimate_arrays(est: dict[str, dict]) -> dict[str, np.ndarray]:
    out = {}
    for src, values in est.items():
        for name, (v, e) in values.items():
            out[f"estimates/{src}/{name}"] = np.stack([np.asarray(v, dtype=np.float64),
                                                       np.asarray(e, dtype=np.float64)])
    return out


def _scalars(est: dict[str, dict]) -> dict:
    return {src: {k: [float(v), float(e)] for k, (v, e) in vals.items() if np.ndim(v) == 0}
            for src, vals in est.items()}


_DIAGNOSTICS = ("leftover/max", "leftover/mean", "leftover/dynamic_range", "leftover/limit",
                "sampler_bias/max_discretization", "sampler_bias/max_total", "sampler_bias/limit")


def _diagnostics(arrays: dict) -> dict:
    """The scalar diagnostics of a point (rgdist.campaign.diagnostics) present in ``arrays``."""
    return {k: float(np.asarray(arrays[k])) for k in _DIAGNOSTICS if k in arrays}


def point_attrs(p) -> dict:
    return {"index": int(p.index), "point_id": p.point_id, "shape": [int(n) for n in p.shape],
            "d": len(p.shape), "m2": float(p.m2), "lam": float(p.lam),
            "kappa": float("nan") if p.kappa is None else float(p.kappa),
            "lam_h": float("nan") if p.lam_h is None else float(p.lam_h)}


def write_results(path: Path, campaign, points: list, owned: dict[str, dict], comm,
                  extra: dict | None = None) -> dict:
    """Collective. ``owned``: {point_id: arrays} of the points this rank writes; ``extra``:
    {path in the file: array} this rank writes besides (e.g. ``scan/...``).

    Returns on every rank {point_id: {"attrs": ..., "estimates": {source: {name: [v, e]}},
    "diagnostics": {name: value}}} (diagnostics: leftover/max, ..., see the layout).
    """
    by_id = {p.point_id: p for p in points}
    local, summary = {}, {}
    for pid, arrays in owned.items():
        est = estimates_from_arrays(arrays, by_id[pid].shape)
        for k, v in {**arrays, **_estimate_arrays(est)}.items():
            local[f"points/{pid}/{k}"] = np.asarray(v)
        summary[pid] = {"estimates": _scalars(est), "diagnostics": _diagnostics(arrays)}
    local.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    gathered = comm.allgather(summary)
    merged = {}
    for part in gathered:
        merged.update(part)
    _write_file(Path(path), campaign, points, merged, local, comm)
    return {pid: {"attrs": point_attrs(by_id[pid]), **merged[pid]} for pid in merged}


def _write_file(path: Path, campaign, points: list, merged: dict, local: dict, comm) -> None:
    """Write ``path.partial`` collectively, then (rank 0) fsync and rename it onto ``path``.

    A failing file system (disk full, quota, read-only, vanished or unwritable directory)
    raises rgdist.errors.StorageError naming ``path``; the partial file is removed and an
    existing ``path`` keeps its old content.  The rank that sees a failure inside the
    collective write raises at once (under MPI it aborts the job: the others may wait in a
    collective it will not join); a failure of rank 0 alone (creating, renaming) reaches
    every rank, and rank 0 reports it.
    """
    import os

    from rgdist import faults
    from rgdist.errors import StorageError, is_storage_errno
    from rgdist.io.atomic import fsync_dir, fsync_file, guarded_h5_write, unlink_quietly
    from rgdist.io.h5 import resolve_driver

    tmp = Path(str(path) + ".partial")

    def fail_together(exc: OSError | None) -> None:  # collective: rank 0's exception
        failure = None
        if exc is not None:
            unlink_quietly(tmp)
            failure = (StorageError.from_oserror(exc, path).to_dict() if is_storage_errno(exc)
                       else {"error": f"{path}: {exc}"})
        failure = comm.bcast(failure)
        if failure and "error" in failure:
            raise OSError(failure["error"])
        if failure:
            raise StorageError(**failure, report=comm.is_root)

    exc = None
    if comm.is_root:
        try:  # a read-only, vanished or full file system fails here with its errno
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        except OSError as e:
            exc = e
    fail_together(exc)
    def write(keep):
        f = open_h5(tmp, "w", comm)
        keep(f)
        write_owned(f, local, comm)
        write_attrs(f, {"rgdist_version": __version__, "schema_version": int(campaign.schema_version),
                        "campaign": json.dumps(campaign.to_dict(), sort_keys=True),
                        "n_points": len(points)}, comm)
        for p in points:
            if p.point_id in merged:
                write_attrs(f, point_attrs(p), comm, path=f"points/{p.point_id}")
        faults.maybe_fail("results_write", tmp)  # disk-fault tests: the data written, not yet closed

    guarded_h5_write(tmp, path, resolve_driver(comm) == "mpio", write)
    comm.barrier()
    exc = None
    if comm.is_root:
        try:
            fsync_file(tmp)
            os.replace(tmp, path)
        except OSError as e:
            exc = e
        else:
            fsync_dir(path.parent if str(path.parent) else Path("."))
    fail_together(exc)


def read_results(path) -> dict:
    """Serial read: {"attrs": root attrs, "points": {id: {"attrs", "arrays"}}}.

    The array names are those of layout 2 whatever the file's layout (rgdist.io.layout:
    ``flow/forward/...``, ``correct/...``); ``attrs`` are the file's own (``rgdist_layout``
    says which layout it was written with)."""
    from rgdist.io.layout import current_names, file_layout
    from rgdist.parallel.comm import Comm

    f = open_h5(path, "r", Comm.serial())
    try:
        out = {"attrs": read_attrs(f), "points": {}}
        layout = file_layout(out["attrs"])
        if "scan" in f:
            out["scan"] = {tag: read_arrays(f, f"scan/{tag}") for tag in sorted(f["scan"])}
        if "points" in f:
            for pid in sorted(f["points"]):
                out["points"][pid] = {"attrs": read_attrs(f["points"][pid]),
                                      "arrays": current_names(read_arrays(f, f"points/{pid}"), layout)}
    finally:
        f.close()
    return out


def content_digest(path) -> dict[str, str]:
    """{dataset or attribute path: sha256 of its value} — for bitwise comparisons of runs.

    Paths are layout-2 names (rgdist.io.layout) whatever the file's layout; the digests are of
    the stored values (the root ``rgdist_layout`` attribute still tells the layouts apart)."""
    import hashlib

    from rgdist.io.layout import file_layout, to_current
    from rgdist.parallel.comm import Comm

    f = open_h5(path, "r", Comm.serial())
    try:
        layout = file_layout(read_attrs(f))
        out = {}
        for n in dataset_names(f):
            a = np.ascontiguousarray(f[n][()])
            out[to_current(n, layout)] = hashlib.sha256(
                a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()).hexdigest()

        def visit(name, obj):
            for k, v in read_attrs(obj).items():
                out[to_current(f"{name}@{k}", layout)] = hashlib.sha256(
                    json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()
        visit("/", f)
        f.visititems(visit)
        return out
    finally:
        f.close()
