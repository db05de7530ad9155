"""The one module that talks to MPI (mpi4py), with a serial fallback.

Every other module receives a :class:`Comm` and never imports mpi4py.  mpi4py is imported
lazily, on the first call of :func:`world` (or :func:`mpi_info`); when it is missing, or
``RGDIST_NO_MPI=1`` is set, :func:`world` returns the serial communicator: rank 0, size 1,
every collective the identity.

Object collectives (``bcast``, ``allgather``) carry small JSON-able objects only: the
object is encoded as UTF-8 JSON and sent as a byte buffer (never pickled), and every rank
- the sender included - gets ``json.loads(json.dumps(obj))`` back (tuples become lists),
so serial and parallel runs see the same values.  Numerical reductions take numpy arrays.

Error policy: an exception on one rank while the others sit in a collective would hang
the job.  Entry points therefore either run under ``python -m mpi4py`` (which aborts all
ranks when one raises) or wrap their work in :func:`run_guarded`, which prints the
traceback tagged with the rank and calls ``MPI_Abort(1)`` when ``size > 1``.
"""
from __future__ import annotations

import json
import sys
import traceback
from functools import lru_cache
from typing import Any, Callable, TypeVar

import numpy as np

from rgdist import settings

T = TypeVar("T")


@lru_cache(maxsize=1)
def _mpi_module():
    """``mpi4py.MPI`` or None (mpi4py missing or disabled by ``RGDIST_NO_MPI``)."""
    if settings.no_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI


def _encode(obj: Any) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"obj: only JSON-able objects can be communicated ({exc})") from None


def _decode(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def _pack_arrays(arrays: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    """(JSON header of names/dtypes/shapes, concatenated raw bytes) of named arrays."""
    header, chunks = [], []
    for name, value in arrays.items():
        a = np.asarray(value, order="C")
        if a.dtype.hasobject:
            raise ValueError(f"arrays[{name!r}]: dtype=object cannot be sent")
        header.append([name, a.dtype.str, list(a.shape)])
        chunks.append(a.reshape(-1).view(np.uint8))
    payload = np.concatenate(chunks) if chunks else np.empty(0, np.uint8)
    return _encode(header), payload.tobytes()


def _unpack_arrays(head: bytes, body: bytes) -> dict[str, np.ndarray]:
    d, pos = {}, 0
    for name, dtype, shape in _decode(head):
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        d[name] = np.frombuffer(body[pos:pos + n], dtype=dt).reshape(shape).copy()
        pos += n
    return d


class Comm:
    """A communicator: mpi4py's (``mpi_comm``) or the serial one (``mpi_comm is None``).

    Construction is collective (it computes the node-local rank with
    ``Split_type(COMM_TYPE_SHARED)``), as is :meth:`split`.
    """

    def __init__(self, mpi_comm=None):
        self._comm = mpi_comm
        if mpi_comm is None:
            self.rank, self.size = 0, 1
            self.local_rank, self.local_size = 0, 1
        else:
            MPI = _mpi_module()
            self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
            node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
            node.Free()

    @classmethod
    def serial(cls) -> "Comm":
        """The single-process communicator (no MPI involved)."""
        return cls(None)

    @property
    def mpi_comm(self):
        """The underlying ``mpi4py.MPI.Comm`` (for h5py's mpio driver), or None if serial."""
        return self._comm

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        kind = "serial" if self._comm is None else "mpi"
        return f"Comm({kind}, rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    # -- synchronisation ------------------------------------------------------------
    def barrier(self) -> None:
        if self._comm is not None:
            self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """Terminate every rank (``MPI_Abort``); serially, raise ``SystemExit(code)``."""
        if self._comm is not None and self.size > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            self._comm.Abort(int(code))
        raise SystemExit(int(code))

    # -- small objects (JSON) ------------------------------------------------------
    def bcast(self, obj: Any = None, root: int = 0) -> Any:
        """``obj`` from rank ``root`` on every rank (JSON-able; other ranks' ``obj`` ignored)."""
        self._check_root(root)
        if self._comm is None:
            return _decode(_encode(obj))
        data = _encode(obj) if self.rank == root else b""
        n = np.array([len(data)], dtype=np.int64)
        self._comm.Bcast(n, root=root)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root else np.empty(n[0], np.uint8)
        self._comm.Bcast(buf, root=root)
        return _decode(buf.tobytes())

    def allgather(self, obj: Any) -> list:
        """``[obj_rank0, obj_rank1, ...]`` on every rank (JSON-able objects)."""
        return [_decode(b) for b in self._allgather_bytes(_encode(obj))]

    def _allgather_bytes(self, data: bytes) -> list[bytes]:
        if self._comm is None:
            return [data]
        counts = np.zeros(self.size, dtype=np.int64)
        self._comm.Allgather(np.array([len(data)], dtype=np.int64), counts)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        out = np.empty(int(offsets[-1]), dtype=np.uint8)
        send = np.frombuffer(data, dtype=np.uint8)
        byte = _mpi_module().BYTE
        spec = (counts.tolist(), offsets[:-1].tolist())
        self._comm.Allgatherv([send, byte], [out, spec, byte])
        return [out[offsets[r]:offsets[r + 1]].tobytes() for r in range(self.size)]

    # -- numerical reductions ----------------------------------------------------------
    def allreduce_sum(self, x) -> np.ndarray:
        """Element-wise sum over ranks of a numpy array (same shape and dtype on every rank)."""
        return self._allreduce(x, "SUM")

    def allreduce_max(self, x) -> np.ndarray:
        """Element-wise maximum over ranks."""
        return self._allreduce(x, "MAX")

    def _allreduce(self, x, op: str) -> np.ndarray:
        a = np.asarray(x, order="C")
        if a.dtype == object:
            raise ValueError("x: allreduce needs a numeric numpy array, got dtype=object")
        if self._comm is None:
            return a.copy()
        out = np.empty_like(a)
        self._comm.Allreduce(a, out, op=getattr(_mpi_module(), op))
        return out

    def any_true(self, flag: bool) -> bool:
        """Logical OR of ``flag`` over ranks (e.g. 'a signal arrived somewhere')."""
        return bool(self.allreduce_max(np.array([1 if flag else 0], dtype=np.int32))[0])

    def gather_arrays(self, arrays: dict[str, np.ndarray], root: int = 0) -> list[dict[str, np.ndarray]] | None:
        """Each rank's dict of named arrays, collected on ``root`` (None elsewhere).

        Sent as a JSON header (names, dtypes, shapes) plus the raw bytes; no pickle.
        Limited to < 2 GiB per rank (MPI counts are int32).
        """
        self._check_root(root)
        if self._comm is None:
            return [{n: np.array(v, copy=True) for n, v in arrays.items()}]
        header, payload = _pack_arrays(arrays)
        headers = self._gather_bytes(header, root)
        bodies = self._gather_bytes(payload, root)
        if self.rank != root:
            return None
        return [_unpack_arrays(h, b) for h, b in zip(headers, bodies)]

    def allgather_arrays(self, arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Each rank's dict of named arrays, on every rank (JSON header + raw bytes, no pickle)."""
        if self._comm is None:
            return [{n: np.array(v, copy=True) for n, v in arrays.items()}]
        header, payload = _pack_arrays(arrays)
        heads = self._allgather_bytes(header)
        bodies = self._allgather_bytes(payload)
        return [_unpack_arrays(h, b) for h, b in zip(heads, bodies)]

    def _gather_bytes(self, data: bytes, root: int) -> list[bytes] | None:
        counts = np.zeros(self.size, dtype=np.int64)
        self._comm.Allgather(np.array([len(data)], dtype=np.int64), counts)
        if int(counts.sum()) >= 2**31:  # MPI counts are C ints; every rank sees this and raises
            raise ValueError(f"arrays: gather payload of {int(counts.sum())} bytes exceeds 2 GiB")
        send = np.frombuffer(data, dtype=np.uint8)
        byte = _mpi_module().BYTE
        if self.rank == root:
            offsets = np.concatenate([[0], np.cumsum(counts)])
            out = np.empty(int(offsets[-1]), dtype=np.uint8)
            spec = (counts.tolist(), offsets[:-1].tolist())
            self._comm.Gatherv([send, byte], [out, spec, byte], root=root)
            return [out[offsets[r]:offsets[r + 1]].tobytes() for r in range(self.size)]
        self._comm.Gatherv([send, byte], None, root=root)
        return None

    # -- sub-communicators ---------------------------------------------------------------
    def split(self, color: int, key: int | None = None) -> "Comm":
        """Ranks with equal ``color`` (an int >= 0) form a new Comm, ordered by ``key``."""
        if int(color) < 0:
            raise ValueError(f"color: must be an int >= 0, got {color}")
        if self._comm is None:
            return Comm(None)
        sub = self._comm.Split(int(color), self.rank if key is None else int(key))
        return Comm(sub)

    def free(self) -> None:
        """Release a communicator made by :meth:`split` (collective over its ranks)."""
        if self._comm is not None and self._comm != _mpi_module().COMM_WORLD:
            self._comm.Free()
            self._comm = None

    def _check_root(self, root: int) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"root: must be in [0, {self.size - 1}], got {root}")


@lru_cache(maxsize=1)
def world() -> Comm:
    """The world communicator (``MPI.COMM_WORLD``), or the serial one without mpi4py."""
    MPI = _mpi_module()
    return Comm(None if MPI is None else MPI.COMM_WORLD)


def mpi_info() -> dict:
    """What MPI this process runs on (for ``check-env``): versions, vendor, world size."""
    MPI = _mpi_module()
    if MPI is None:
        disabled = settings.no_mpi()
        return {"available": False, "reason": "disabled by RGDIST_NO_MPI" if disabled else "mpi4py not installed"}
    import mpi4py

    name, version = MPI.get_vendor()
    return {
        "available": True,
        "mpi4py": mpi4py.__version__,
        "library": MPI.Get_library_version().strip("\x00 \n"),
        "vendor": name,
        "vendor_version": ".".join(str(v) for v in version),
        "standard": ".".join(str(v) for v in MPI.Get_version()),
        "world_size": MPI.COMM_WORLD.Get_size(),
    }


def run_guarded(fn: Callable[[], T], comm: Comm | None = None) -> T:
    """``fn()``; on an exception print the traceback tagged with the rank and, when
    ``comm.size > 1``, ``MPI_Abort(1)`` so that no other rank hangs in a collective.

    ``SystemExit`` passes through untouched (a deliberate exit taken by all ranks, e.g.
    after a pre-emption checkpoint).  A ConfigError (bad input that only the run could
    detect, e.g. rgdist.campaign.diagnostics) prints one ``error:`` line and aborts with
    exit code 2 (rgdist.exitcodes.BAD_INPUT).  Serially the exception is re-raised.
    """
    comm = world() if comm is None else comm
    try:
        return fn()
    except SystemExit:
        raise
    except BaseException as exc:
        if comm.size <= 1:
            raise
        from rgdist.errors import ConfigError, storage_failure

        if isinstance(exc, ConfigError):  # bad input found mid-run: one line, exit code 2
            sys.stderr.write(f"error: {exc}\n")
            comm.abort(2)
        failure = storage_failure(exc)  # disk full, quota, read-only, vanished directory:
        if failure is not None:  # one line from the rank that saw it, every rank exits 74
            failure.abort(comm)
        text = traceback.format_exc()
        prefix = f"[rank {comm.rank}/{comm.size}] "
        sys.stderr.write("".join(prefix + line + "\n" for line in text.rstrip("\n").split("\n")))
        sys.stderr.flush()
        comm.abort(1)
        raise  # unreachable: abort does not return
