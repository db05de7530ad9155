"""Collect: read the results file of every run directory into the point table.

One row per (grid point, source) -- ``source`` is ``hmc`` or ``diffusion`` -- with the lattice
(``d``, ``shape`` such as ``8x8``, ``N`` = the side of a hypercubic lattice, 0 otherwise), the
couplings (``lam``, ``m2``, ``kappa``, ``lam_h``), and for every observable its mean and error
(``obs``, ``obs_err``) from ``points/<id>/estimates/<source>/<name>``.  Observables: chi,
chi_conn, binder, xi2, abs_m, m_R, lambda_R, Z, ``M2`` = <M^2> and ``M4`` = <M^4> (renamed from
the results' m2/m4 so that ``m2`` stays the coupling).  Results files of layout 1 and 2 are
read alike (rgdist.io.aggregate_file, rgdist.io.layout).

Bad input (missing directory, not a run directory, no results file yet, unreadable results,
the same grid point in two inputs with different results) raises ConfigError before anything
is returned.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from rgdist.campaign.rundir import completed_results
from rgdist.errors import ConfigError, RgdistError

#: (name in the results file, column in the aggregate table)
RESULT_NAMES = (("chi", "chi"), ("chi_conn", "chi_conn"), ("binder", "binder"), ("xi2", "xi2"),
                ("abs_m", "abs_m"), ("m_R", "m_R"), ("lambda_R", "lambda_R"), ("Z", "Z"),
                ("m2", "M2"), ("m4", "M4"))
TABLE_OBSERVABLES = tuple(col for _, col in RESULT_NAMES)
KEY_COLUMNS = ("point_id", "source", "run_dir", "d", "shape", "N", "lam", "m2", "kappa", "lam_h")
POINT_COLUMNS = KEY_COLUMNS + tuple(c for o in TABLE_OBSERVABLES for c in (o, o + "_err"))
_NAN = math.nan


def read_run(run_dir, *, flow: bool = False, series: bool = False, baseline: bool = False) -> dict:
    """The scalar estimates (and flow data, HMC series, flow-baseline results) of a run
    directory's results file."""
    from rgdist.io.aggregate_file import read_point_estimates

    results = completed_results(run_dir)
    try:
        return read_point_estimates(results, flow=flow, series=series, baseline=baseline)
    except (OSError, KeyError, ValueError, RgdistError) as exc:
        raise ConfigError("run_dir", f"{results} is unreadable: {exc}") from None


def shape_of(attrs: dict) -> tuple[int, ...]:
    """The lattice shape of a point from its attributes."""
    return tuple(int(n) for n in np.atleast_1d(attrs["shape"]))


def _physics_key(attrs: dict) -> tuple:
    return (shape_of(attrs), round(float(attrs["lam"]), 12), round(float(attrs["m2"]), 12))


def _same_estimates(a: dict, b: dict) -> bool:
    if sorted(a) != sorted(b) or any(sorted(a[s]) != sorted(b[s]) for s in a):
        return False
    return all(np.array_equal(np.asarray(a[s][n]), np.asarray(b[s][n]), equal_nan=True)
               for s in a for n in a[s])


def _same_arrays(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k]),
                                                         equal_nan=True) for k in a)


def point_label(attrs: dict) -> str:
    """``N=8x8 lam=0.5 m2=-0.4``: a point for messages and figure titles."""
    return f"N={'x'.join(map(str, shape_of(attrs)))} lam={float(attrs['lam']):g} m2={float(attrs['m2']):g}"


def merge_runs(runs: Sequence[tuple[str, dict]]) -> tuple[dict, list[str]]:
    """{point_id: (run_dir, point)} over all runs; ConfigError on conflicting duplicates.

    The same point id in two inputs with identical estimates is counted once (a note); with
    different estimates, or the same (shape, lam, m2) under two different point ids
    (campaigns with different settings), the inputs conflict.
    """
    by_id: dict[str, tuple[str, dict]] = {}
    by_phys: dict[tuple, tuple[str, str]] = {}
    notes: list[str] = []
    for run_dir, data in runs:
        for pid, p in data["points"].items():
            if pid in by_id:
                other_dir, other = by_id[pid]
                if not _same_estimates(other["estimates"], p["estimates"]):
                    raise ConfigError("run_dirs", f"point {pid} ({point_label(p['attrs'])}) is in {other_dir} "
                                      f"and {run_dir} with different results; aggregate only one of them")
                notes.append(f"point {pid} is in {other_dir} and {run_dir} with identical results: counted once")
                if not _same_arrays(other.get("baseline") or {}, p.get("baseline") or {}):
                    notes.append(f"point {pid}: the flow-baseline results of {other_dir} and {run_dir} "
                                 f"differ (other baseline settings); the table shows {other_dir}'s")
                continue
            key = _physics_key(p["attrs"])
            if key in by_phys:
                opid, odir = by_phys[key]
                raise ConfigError("run_dirs", f"the grid point {point_label(p['attrs'])} is in {odir} (point {opid}) "
                                  f"and {run_dir} (point {pid}) from campaigns with different settings; "
                                  "aggregate only one of them")
            by_id[pid] = (run_dir, p)
            by_phys[key] = (pid, run_dir)
    return by_id, notes


def point_rows(points: dict) -> list[dict]:
    """One row per (point, source), sorted by (d, shape, lam, m2, source)."""
    rows = []
    for pid, (run_dir, p) in points.items():
        a = p["attrs"]
        shape = shape_of(a)
        base = {"point_id": pid, "run_dir": str(run_dir), "d": len(shape),
                "shape": "x".join(map(str, shape)),
                "N": shape[0] if len(set(shape)) == 1 else 0,
                "lam": float(a["lam"]), "m2": float(a["m2"]),
                "kappa": float(a.get("kappa", _NAN)), "lam_h": float(a.get("lam_h", _NAN))}
        for src, est in p["estimates"].items():
            row = dict(base, source=src)
            for name, col in RESULT_NAMES:
                row[col], row[col + "_err"] = est.get(name, (_NAN, _NAN))
            rows.append(row)
    rows.sort(key=lambda r: (r["d"], tuple(int(n) for n in r["shape"].split("x")), r["lam"], r["m2"],
                             r["source"]))
    return rows


def collect(run_dirs: Sequence, *, flow: bool = False, series: bool = False,
            baseline: bool = False) -> tuple[list[dict], dict, list[str]]:
    """(rows, {point_id: (run_dir, point)}, notes) of the run directories; every input is
    checked before anything is returned."""
    if not run_dirs:
        raise ConfigError("run_dirs", "give at least one run directory")
    seen, unique, notes = set(), [], []
    for rd in run_dirs:
        key = Path(rd).resolve()
        if key in seen:
            notes.append(f"{rd} given twice: read once")
            continue
        seen.add(key)
        unique.append(rd)
    runs = [(str(rd), read_run(rd, flow=flow, series=series, baseline=baseline)) for rd in unique]
    points, more = merge_runs(runs)
    notes += more
    for rd, data in runs:
        if not data["points"]:
            notes.append(f"{rd}: the results file holds no points")
    return point_rows(points), points, notes
