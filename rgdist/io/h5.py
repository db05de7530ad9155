"""HDF5 access (the only module besides ``checkpoint`` that touches h5py), MPI-aware.

Two drivers, one file layout:

* ``mpio`` (h5py built against parallel HDF5, ``comm.size > 1``): every rank opens the
  file collectively.  Structure changes - groups, datasets, attributes - are collective:
  every rank makes the same calls with the same arguments in the same order (the
  helpers here allgather the metadata first so this holds).  Data writes are independent:
  each dataset is written by its owner rank only, or each rank writes its own rows.
* ``serial``: one process writes.  With ``size > 1`` and no parallel h5py (or when forced)
  the data are gathered to rank 0, which creates and writes everything; on the other
  ranks :func:`open_h5` returns ``None`` for write modes, and the helpers accept that.
  Read-only opens (``mode="r"``) under the serial driver give every rank its own handle.

Files carry the root attribute ``rgdist_layout = 1``.  Attribute values are JSON-like
scalars/lists; strings are stored as fixed-length UTF-8 (never pickled) and decoded on
read.  Datasets hold plain numeric/bool numpy arrays; text goes in attributes or through
:func:`encode_str`.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from rgdist.errors import RgdistError
from rgdist.parallel.comm import Comm

try:
    import h5py
except ImportError as exc:  # pragma: no cover - h5py is an optional dependency
    raise ImportError("rgdist.io.h5 needs h5py (pip install 'rgdist[mpi]')") from exc

LAYOUT_VERSION = 2  # 2: "exact" groups renamed (rgdist.io.layout); layout 1 still read
LAYOUT_ATTR = "rgdist_layout"
DRIVERS = ("auto", "mpio", "serial")
MODES = ("r", "r+", "w", "w-", "x", "a")


def h5_parallel_available() -> bool:
    """True when h5py was built against parallel HDF5 (``driver="mpio"`` usable)."""
    return bool(h5py.get_config().mpi)


def h5_info() -> dict:
    """Versions for ``check-env``: h5py, HDF5, and whether h5py is MPI-enabled."""
    return {"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "h5py_mpi": h5_parallel_available()}


def resolve_driver(comm: Comm, driver: str = "auto") -> str:
    """``"mpio"`` or ``"serial"``.  auto: mpio iff ``comm.size > 1`` and parallel h5py exists."""
    if driver not in DRIVERS:
        raise ValueError(f"driver: must be one of {DRIVERS}, got {driver!r}")
    if driver == "auto":
        return "mpio" if comm.size > 1 and h5_parallel_available() else "serial"
    if driver == "mpio" and (comm.mpi_comm is None or not h5_parallel_available()):
        raise RgdistError("driver 'mpio' needs mpi4py and an h5py built with parallel HDF5 "
                          f"(h5py.get_config().mpi={h5_parallel_available()}, comm={comm!r})")
    return driver


def is_collective(f) -> bool:
    """True for a handle opened with the mpio driver (all ranks take part in every call)."""
    return f is not None and f.driver == "mpio"


def open_h5(path: str | os.PathLike, mode: str, comm: Comm, driver: str = "auto", libver=None):
    """Open ``path``.  Collective on every rank of ``comm`` for mpio and for writes;
    a serial-driver read (``mode="r"``) is per process and communicates nothing.

    Returns an ``h5py.File``, or ``None`` on non-root ranks for a serial-driver write
    (see the module docstring).  ``libver``: h5py's, e.g. "v108" for checksummed
    metadata (readable by HDF5 >= 1.10).  A file opened for writing without ``rgdist_layout`` gets
    ``rgdist_layout = 1``; a file of a newer layout is refused (RgdistError).
    """
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
    kind = resolve_driver(comm, driver)
    if kind == "serial" and mode == "r":
        return check_layout(h5py.File(path, "r"), path)
    if kind == "mpio":
        f = h5py.File(path, mode, driver="mpio", comm=comm.mpi_comm, libver=libver)
        if mode == "r":
            return check_layout(f, path)
        state = {"error": None, "has_layout": LAYOUT_ATTR in f.attrs}
    else:
        f, state = None, None
        if comm.is_root:
            try:
                f = h5py.File(path, mode, libver=libver)
                state = {"error": None, "has_layout": LAYOUT_ATTR in f.attrs}
            except OSError as exc:
                state = {"error": f"{path}: cannot open in mode {mode!r} ({exc})"}
        state = comm.bcast(state)  # rank 0's view decides for every rank
        if state["error"]:
            raise RgdistError(state["error"])
    if state["has_layout"]:
        return f if f is None else check_layout(f, path)
    write_attrs(f, {LAYOUT_ATTR: LAYOUT_VERSION}, comm)
    return f


def check_layout(f, path="") -> Any:
    """Return ``f`` if its ``rgdist_layout`` is absent or <= ours; else close it and raise."""
    version = int(f.attrs.get(LAYOUT_ATTR, 0))
    if version > LAYOUT_VERSION:
        f.close()
        raise RgdistError(f"{path or f.filename}: layout version {version} is newer than supported ({LAYOUT_VERSION})")
    return f


# -- checksums and strings --------------------------------------------------------------------
def array_checksum(a: np.ndarray) -> str:
    """sha256 hex of (dtype, shape, little-endian C-order bytes) of ``a``."""
    a = np.asarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.asarray(a, order="C")
    h = hashlib.sha256(f"{a.dtype.newbyteorder('<').str}|{list(a.shape)}|".encode("ascii"))
    h.update(a.reshape(-1).view(np.uint8).data if a.size else b"")
    return h.hexdigest()


def encode_str(text: str) -> np.ndarray:
    """``text`` as a uint8 array of its UTF-8 bytes (to store text as a dataset)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_str(a: np.ndarray) -> str:
    return np.asarray(a, dtype=np.uint8).tobytes().decode("utf-8")


# -- attributes -----------------------------------------------------------------------------------
def _attr_plain(name: str, value: Any) -> Any:
    """A JSON-able form of an attribute value, or ValueError naming the attribute."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        flat = np.asarray(value)
        if flat.dtype.kind in "biufU" and flat.ndim >= 1:
            return list(value) if flat.dtype.kind != "U" else [str(v) for v in value]
    raise ValueError(f"attrs[{name!r}]: must be a bool/int/float/str or a list of them, "
                     f"got {type(value).__name__} (encode dicts with json.dumps)")


def _attr_h5(value: Any):
    if isinstance(value, str):
        b = value.encode("utf-8")
        return np.array(b, dtype=h5py.string_dtype("utf-8", max(1, len(b))))
    if isinstance(value, list):
        arr = np.asarray(value)
        if arr.dtype.kind == "U":
            bs = [v.encode("utf-8") for v in value]
            return np.array(bs, dtype=h5py.string_dtype("utf-8", max([1] + [len(b) for b in bs])))
        return arr
    if isinstance(value, bool):
        return np.bool_(value)
    return np.int64(value) if isinstance(value, int) else np.float64(value)


def write_attrs(f, attrs: dict[str, Any], comm: Comm, path: str = "/") -> None:
    """Set attributes on object ``path`` of ``f``.  Collective: call on every rank.

    The values of rank 0 are used on every rank (attribute writes must be identical
    under mpio); under the serial driver only the rank holding the file writes.
    """
    plain = {str(k): _attr_plain(str(k), v) for k, v in attrs.items()} if comm.is_root else None
    plain = comm.bcast(plain)
    if f is None:
        return
    obj = f[path]
    for name in sorted(plain):
        obj.attrs[name] = _attr_h5(plain[name])


def _attr_python(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return _attr_python(value.item())
    if isinstance(value, np.ndarray):
        return [_attr_python(v) for v in value.tolist()] if value.ndim else _attr_python(value[()])
    return value


def read_attrs(obj) -> dict[str, Any]:
    """The attributes of an h5py object as python values (str, int, float, bool, lists)."""
    return {name: _attr_python(obj.attrs[name]) for name in obj.attrs}


# -- datasets -----------------------------------------------------------------------------------
def _check_name(name: str) -> str | None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return f"array name {name!r}: use non-empty 'a/b/c' paths without leading '/', '.' or '..'"
    return None


def _check_array(name: str, a: np.ndarray) -> str | None:
    if a.dtype.kind not in "biufc":
        return (f"arrays[{name!r}]: dtype {a.dtype} not storable; use numeric/bool arrays "
                "(text: encode_str or attributes)")
    return None


def _join(group: str, name: str) -> str:
    group = group.strip("/")
    return f"{group}/{name}" if group else name


def write_owned(f, arrays: dict[str, Any], comm: Comm, group: str = "/",
                checksum_attr: str | None = "sha256") -> dict[str, dict]:
    """Write the datasets each rank owns into ``group``.  Collective: call on every rank.

    ``arrays`` holds the arrays *this* rank owns (names must be distinct across ranks;
    a shared array is passed by one rank only, usually rank 0).  Metadata
    (name, dtype, shape, sha256) is allgathered, then - mpio - every rank creates every
    dataset in sorted-name order and each owner writes its own data, or - serial - the
    arrays are gathered to rank 0, which creates and writes everything.  Each dataset
    gets its checksum as attribute ``checksum_attr`` (None: none).

    Returns, on every rank, ``{name: {"dtype", "shape", "sha256", "rank"}}`` of all ranks.
    """
    local = {str(k): np.asarray(v, order="C") for k, v in arrays.items()}
    mine = [e for n, a in local.items() for e in (_check_name(n), _check_array(n, a)) if e]
    meta = {} if mine else {n: {"dtype": a.dtype.str, "shape": list(a.shape),
                                  "sha256": array_checksum(a), "rank": comm.rank}
                              for n, a in local.items()}
    gathered = comm.allgather({"errors": mine, "meta": meta})
    errors: list[str] = []
    merged: dict[str, dict] = {}
    for r, part in enumerate(gathered):
        errors += [f"rank {r}: {e}" for e in part["errors"]]
        for name, m in part["meta"].items():
            if name in merged:
                errors.append(f"array name {name!r} given by ranks {merged[name]['rank']} and {r}")
            merged[name] = m
    if errors:
        raise ValueError("; ".join(dict.fromkeys(errors)))  # the same message on every rank
    if is_collective(f):
        datasets = {n: f.create_dataset(_join(group, n), shape=tuple(m["shape"]), dtype=np.dtype(m["dtype"]))
                    for n, m in sorted(merged.items())}
        if checksum_attr:
            for n in sorted(merged):
                datasets[n].attrs[checksum_attr] = _attr_h5(merged[n]["sha256"])
        for n, a in local.items():
            if a.size:
                datasets[n][()] = a
        return merged
    parts = comm.gather_arrays(local) if comm.size > 1 else [local]
    if f is None:
        return merged
    if parts is None:
        raise RgdistError("serial HDF5 write: the file must be open on rank 0")
    for part in parts:
        for n, a in part.items():
            if array_checksum(a) != merged[n]["sha256"]:
                raise RgdistError(f"array {n!r} changed in transit to rank 0 (checksum mismatch)")
    everything = {n: a for part in parts for n, a in part.items()}
    for n in sorted(merged):
        ds = f.create_dataset(_join(group, n), data=everything[n])
        if checksum_attr:
            ds.attrs[checksum_attr] = _attr_h5(merged[n]["sha256"])
    return merged


def write_rows(f, name: str, local_rows: Any, comm: Comm, group: str = "/") -> tuple[int, tuple]:
    """Write a dataset distributed by rows: rank r contributes ``local_rows`` (shape
    ``(n_r, *rest)``), stored at rows ``[sum_{q<r} n_q, ... + n_r)``.  Collective.

    Returns ``(offset, global_shape)`` of this rank's rows.
    """
    a = np.asarray(local_rows, order="C")
    err = _check_name(name) or _check_array(name, a) or (None if a.ndim >= 1 else f"local_rows: need ndim >= 1 for {name!r}")
    shapes = comm.allgather({"error": err, "shape": list(a.shape), "dtype": a.dtype.str})
    problems = [f"rank {r}: {s['error']}" for r, s in enumerate(shapes) if s["error"]]
    if not problems and len({(tuple(s["shape"][1:]), s["dtype"]) for s in shapes}) != 1:
        problems.append(f"local_rows for {name!r}: trailing shapes/dtypes differ across ranks: "
                        f"{[(s['shape'], s['dtype']) for s in shapes]}")
    if problems:
        raise ValueError("; ".join(problems))
    counts = [s["shape"][0] for s in shapes]
    offset = int(sum(counts[: comm.rank]))
    global_shape = (int(sum(counts)), *a.shape[1:])
    if is_collective(f):
        ds = f.create_dataset(_join(group, name), shape=global_shape, dtype=a.dtype)
        if a.shape[0]:
            ds[offset:offset + a.shape[0]] = a
        return offset, global_shape
    parts = comm.gather_arrays({"rows": a}) if comm.size > 1 else [{"rows": a}]
    if f is not None:
        f.create_dataset(_join(group, name), data=np.concatenate([p["rows"] for p in parts], axis=0))
    return offset, global_shape


def read_arrays(f, group: str = "/", names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Datasets below ``group`` as ``{relative/name: ndarray}`` (all of them, or ``names``)."""
    g = f[group]
    if names is None:
        found: list[str] = []
        g.visititems(lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None)
        names = found
    return {n: np.asarray(g[n][()]) for n in sorted(names)}


def dataset_names(f, group: str = "/") -> list[str]:
    """Sorted relative names of all datasets below ``group``."""
    found: list[str] = []
    f[group].visititems(lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None)
    return sorted(found)
