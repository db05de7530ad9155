"""Serial HDF5 access for `rgdist aggregate` / `rgdist plot`: read the scalar estimates (and
flow data) of a results file, write and read the aggregate file.

Reading a results file (layout of :mod:`rgdist.io.results`, version 1 or 2) loads only what
the aggregate needs: the point attributes, the scalar estimates
``points/<id>/estimates/<source>/<name>`` (shape (2,) = [value, err]; the (2, *shape) ``g2``
arrays are skipped) and, on request, every dataset below ``points/<id>/flow`` under its
layout-2 name (:mod:`rgdist.io.layout`: ``forward/...``, not layout 1's ``exact/...``) and,
on request, the per-configuration HMC series ``points/<id>/series/<name>`` (campaign
``measure.series: true``: phi2_sum, m, g2_p1, chain; rgdist.campaign.stages.hmc) and, on
request, every dataset below ``points/<id>/baseline`` (campaign ``baseline:``, the flow
baseline: flow/..., ess_fraction, pareto_k, reweight/..., train/...;
rgdist.campaign.stages.baseline).  The raw accumulators, training histories etc. are not read.

Aggregate file (layout version 1)::

    /                    attrs: rgdist_layout=1, rgdist_version, kind="aggregate", plus the
                                caller's attrs (run dirs, bootstrap settings, ...)
    /<table>/            one group per table (e.g. points, crossings, peaks, critical)
        attrs: columns (the column order), n_rows
        <column>         one dataset per column, shape (n_rows,): float64 or int64;
                         text columns are int64 codes into the dataset attribute
                         ``categories`` (list of str) with attribute ``encoding="categorical"``

Every dataset carries its sha256 as attribute ``sha256`` (see :func:`rgdist.io.h5.write_owned`).
The file is written under a temporary name and renamed into place (never half-written).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from rgdist import __version__
from rgdist.io.h5 import open_h5, read_arrays, read_attrs, write_attrs, write_owned
from rgdist.io.layout import file_layout, point_name
from rgdist.parallel.comm import Comm

AGGREGATE_KIND = "aggregate"


# ----------------------------------------------------------------------------- results files
def read_point_estimates(path, *, flow: bool = False, series: bool = False,
                         baseline: bool = False) -> dict:
    """Serial read of a results file.

    Returns ``{"attrs": root attrs, "points": {point_id: {"attrs": point attrs,
    "estimates": {source: {name: (value, err)}}, "flow": {name: ndarray}, "series": {name:
    ndarray}, "baseline": {name: ndarray}}}}``; ``flow`` holds the datasets below
    ``points/<id>/flow`` by relative layout-2 name (``forward/t``, ``learned/m_R``,
    ``couplings/learned/phi2``, ...; empty unless ``flow=True`` and present), ``series`` those
    below ``points/<id>/series`` (empty unless ``series=True`` and present), ``baseline`` those
    below ``points/<id>/baseline`` (``flow/t``, ``reweight/chi``, ...; empty unless
    ``baseline=True`` and present).
    Raises OSError / KeyError / RgdistError on unreadable files (callers translate).
    """
    f = open_h5(path, "r", Comm.serial())
    try:
        out = {"attrs": read_attrs(f), "points": {}}
        layout = file_layout(out["attrs"])
        if "points" not in f:
            return out
        for pid in sorted(f["points"]):
            g = f["points"][pid]
            est: dict[str, dict] = {}
            if "estimates" in g:
                for src in sorted(g["estimates"]):
                    sg = g["estimates"][src]
                    vals = {}
                    for name in sorted(sg):
                        ds = sg[name]
                        if getattr(ds, "shape", None) == (2,):
                            a = np.asarray(ds[()], dtype=np.float64)
                            vals[name] = (float(a[0]), float(a[1]))
                    est[src] = vals
            fl = read_arrays(f, f"points/{pid}/flow") if flow and "flow" in g else {}
            fl = {point_name(f"flow/{n}", layout)[len("flow/"):]: a for n, a in fl.items()}
            se = read_arrays(f, f"points/{pid}/series") if series and "series" in g else {}
            bl = read_arrays(f, f"points/{pid}/baseline") if baseline and "baseline" in g else {}
            out["points"][pid] = {"attrs": read_attrs(g), "estimates": est, "flow": fl, "series": se,
                                  "baseline": bl}
        return out
    finally:
        f.close()


# ----------------------------------------------------------------------------- aggregate file
def _encode_column(values: Sequence) -> tuple[np.ndarray, list[str] | None]:
    """(dataset array, categories or None) for one column."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return (arr.astype(np.int64) if arr.dtype.kind in "biu" else arr.astype(np.float64)), None
    text = ["" if v is None else str(v) for v in values]
    cats = sorted(set(text))
    index = {c: i for i, c in enumerate(cats)}
    return np.asarray([index[t] for t in text], dtype=np.int64), cats


def write_aggregate(path, tables: Mapping[str, Mapping[str, Sequence]], attrs: Mapping | None = None) -> Path:
    """Write ``tables`` ({table: {column: values}}, columns of equal length, insertion order
    kept) to ``path`` atomically (serial).  Text columns are stored as categorical codes."""
    path = Path(path)
    comm = Comm.serial()
    arrays, col_attrs, group_attrs = {}, {}, {}
    for tname, cols in tables.items():
        lengths = {c: len(v) for c, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"tables[{tname!r}]: columns have different lengths {lengths}")
        n = next(iter(lengths.values()), 0)
        group_attrs[tname] = {"columns": list(cols) or [""], "n_rows": int(n)}
        for cname, values in cols.items():
            arr, cats = _encode_column(list(values))
            arrays[f"{tname}/{cname}"] = arr
            if cats is not None:
                col_attrs[f"{tname}/{cname}"] = {"encoding": "categorical", "categories": cats or [""]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    f = open_h5(tmp, "w", comm)
    try:
        write_owned(f, arrays, comm)
        for tname, a in group_attrs.items():
            if tname not in f:
                f.create_group(tname)
            write_attrs(f, a, comm, path=tname)
        for name, a in col_attrs.items():
            write_attrs(f, a, comm, path=name)
        write_attrs(f, {"rgdist_version": __version__, "kind": AGGREGATE_KIND, **dict(attrs or {})}, comm)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    f.close()
    os.replace(tmp, path)
    return path


def read_aggregate(path) -> dict:
    """Inverse of :func:`write_aggregate`: ``{"attrs": root attrs, "tables": {table:
    {column: ndarray}}}`` with text columns decoded to object arrays of str."""
    f = open_h5(path, "r", Comm.serial())
    try:
        out = {"attrs": read_attrs(f), "tables": {}}
        for tname in f:
            g = f[tname]
            ga = read_attrs(g)
            cols = {}
            for cname in ga.get("columns", []):
                if cname not in g:
                    continue
                ds = g[cname]
                a = np.asarray(ds[()])
                ca = read_attrs(ds)
                if ca.get("encoding") == "categorical":
                    cats = list(ca["categories"])
                    a = np.asarray([cats[int(i)] for i in a], dtype=object)
                cols[cname] = a
            out["tables"][tname] = cols
        return out
    finally:
        f.close()
