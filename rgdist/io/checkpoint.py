"""Checkpoints that are never current before they are complete.

Directory layout::

    current.json            pointer: {"file", "tag", "file_size", "n_arrays", "nbytes",
                            "manifest_sha256", "layout", "writer_size", "written_at"}
    ckpt-00000012.h5        one complete checkpoint per tag (step counter)
    .ckpt-00000013.h5.partial   a write in progress (or torn by a crash; ignored)

File layout (``rgdist_layout = 1``): every array is dataset ``/arrays/<name>`` with
attribute ``sha256`` (see :func:`rgdist.io.h5.array_checksum`); root attributes ``tag``,
``attrs_json`` (the caller's attrs as one UTF-8 JSON string), ``manifest_json``
(``{name: sha256}`` of every array), ``writer_size``, ``created`` and - written last,
after everything else is flushed - ``complete = 1``.  Nothing is pickled.

Who writes what (:meth:`CheckpointStore.save`): array names ``rank{r}/...`` belong to
rank r and are passed by rank r only (chain states, generator states of that rank);
every other name is *shared* (model, EMA, optimizer, counters) and rank 0's copy is
stored - other ranks may pass or omit it.  With the mpio driver all ranks open the file
collectively, create every dataset (metadata allgathered first) and each rank writes
its own datasets, so no rank ever holds another rank's data: chain states grow with
the number of ranks, and gathering them would make rank 0's memory and the write time
scale with the job.  Without parallel h5py (or ``driver="serial"``) rank 0 gathers the
per-rank arrays and writes everything - fine for the small payloads of this project -
and the file is identical.  A saved file also records ``writer_size``; a resume with a
different number of ranks sees ``rank{r}/`` names that may not match its own.
Newer tags than the one being saved are deleted when it becomes current (they belong
to an abandoned timeline: the pointer is the authority).

Commit protocol: write ``.ckpt-T.h5.partial`` -> set ``complete`` -> close -> fsync ->
rename to ``ckpt-T.h5`` -> atomically replace ``current.json`` -> prune.  A crash at any
point leaves the previous pointer and file intact.  A failing file system (disk full, quota,
read-only, vanished or unwritable directory) raises :class:`rgdist.errors.StorageError`
naming ``ckpt-T.h5`` (or ``current.json``) after removing the partial file (or the renamed
file whose pointer switch failed): the previous checkpoint stays current.

Loading: rank 0 tries the pointer target, then every ``ckpt-*.h5`` by descending tag,
and takes the first that opens, has ``complete = 1`` and whose every dataset matches its
checksum and the manifest (and, for the pointer target, the pointer's
``manifest_sha256``).  The choice is broadcast; each rank then reads the shared arrays
plus its own ``rank{r}/`` arrays and re-verifies them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from rgdist import faults
from rgdist.errors import CheckpointError, StorageError, is_storage_errno
from rgdist.io import h5
from rgdist.io.atomic import (atomic_write_json, fsync_dir, fsync_file, guarded_h5_write, read_json,
                              unlink_quietly)
from rgdist.parallel.comm import Comm, world

POINTER = "current.json"
ARRAYS_GROUP = "arrays"
_FILE_RE = re.compile(r"^ckpt-(\d{8,})\.h5$")
_PARTIAL_RE = re.compile(r"^\.ckpt-(\d{8,})\.h5\.partial$")
_RANK_RE = re.compile(r"^rank(\d+)/")


def _create_empty(path: Path) -> None:
    """Create (or truncate) ``path`` with a plain ``open``: its OSError carries the errno and
    the file name, which an HDF5 open failure does not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.close(fd)


def checkpoint_name(tag: int) -> str:
    return f"ckpt-{tag:08d}.h5"


def manifest_digest(manifest: dict[str, str]) -> str:
    """sha256 of the sorted ``name:sha256`` lines (a checksum of checksums)."""
    text = "".join(f"{n}:{manifest[n]}\n" for n in sorted(manifest))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def owner_of(name: str) -> int | None:
    """The rank owning array ``name`` (``rank{r}/...``), or None for a shared array."""
    m = _RANK_RE.match(name)
    return int(m.group(1)) if m else None


def inspect_file(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """``(reason, manifest_digest)``: reason is None when the checkpoint file at ``path``
    is complete and intact (every dataset matches its checksum and the manifest)."""
    try:
        with h5.open_h5(path, "r", Comm.serial()) as f:
            attrs = h5.read_attrs(f)
            if attrs.get("complete") != 1:
                return "no complete=1 attribute (torn write)", None
            manifest = json.loads(attrs["manifest_json"])
            json.loads(attrs["attrs_json"] or "{}")
            names = h5.dataset_names(f, ARRAYS_GROUP) if ARRAYS_GROUP in f else []
            if sorted(manifest) != names:
                return f"datasets {names} differ from the manifest {sorted(manifest)}", None
            for name in names:
                ds = f[ARRAYS_GROUP][name]
                if h5.read_attrs(ds).get("sha256") != manifest[name]:
                    return f"dataset {name!r}: checksum attribute differs from the manifest", None
                if h5.array_checksum(np.asarray(ds[()])) != manifest[name]:
                    return f"dataset {name!r}: data do not match the checksum", None
    except FileNotFoundError:
        return "file missing", None
    except Exception as exc:  # noqa: BLE001 - any unreadable structure means a torn/corrupted file
        return f"unreadable ({type(exc).__name__}: {exc})", None
    return None, manifest_digest(manifest)


class CheckpointStore:
    """Versioned checkpoints in ``directory``, written collectively over ``comm``.

    ``keep``: how many checkpoint files to retain (>= 1).  ``driver``: "auto" | "mpio" |
    "serial" (see :mod:`rgdist.io.h5`).  All methods are collective.
    """

    def __init__(self, directory: str | os.PathLike, comm: Comm | None = None, keep: int = 3,
                 driver: str = "auto"):
        if int(keep) < 1:
            raise ValueError(f"keep: must be >= 1, got {keep}")
        if driver not in h5.DRIVERS:
            raise ValueError(f"driver: must be one of {h5.DRIVERS}, got {driver!r}")
        self.directory = Path(directory)
        self.comm = world() if comm is None else comm
        self.keep = int(keep)
        self.driver = driver

    # -- listing ----------------------------------------------------------------------------------
    def tags(self) -> list[int]:
        """Tags of the ``ckpt-*.h5`` files present, ascending (local view, no communication)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _FILE_RE.match(p.name)))

    def path(self, tag: int) -> Path:
        return self.directory / checkpoint_name(tag)

    def pointer(self) -> dict | None:
        """The parsed ``current.json`` or None when absent/unparsable (local, no communication)."""
        try:
            ptr = read_json(self.directory / POINTER)
        except (OSError, ValueError):
            return None
        return ptr if isinstance(ptr, dict) else None

    # -- save ---------------------------------------------------------------------------------------
    def save(self, tag: int, arrays: dict[str, Any], attrs: dict[str, Any] | None = None) -> dict:
        """Write checkpoint ``tag`` and make it current; returns the pointer dict (all ranks).

        ``arrays``: this rank's ``rank{rank}/...`` arrays plus (on rank 0 at least) the
        shared ones; ``attrs``: a JSON-able dict (rank 0's is stored).
        """
        comm = self.comm
        if int(tag) < 0:
            raise ValueError(f"tag: must be an int >= 0, got {tag}")
        tag = int(tag)
        owned, problems, shared = {}, [], []
        for name, value in arrays.items():
            owner = owner_of(name)
            if owner is not None and owner != comm.rank:
                problems.append(f"arrays[{name!r}]: rank {comm.rank} may not pass rank {owner}'s arrays")
            elif owner == comm.rank or comm.is_root:
                owned[name] = value
            if owner is None:
                shared.append(name)
        attrs_json = None
        if comm.is_root:
            try:
                attrs_json = json.dumps(attrs or {}, sort_keys=True)
            except (TypeError, ValueError) as exc:
                problems.append(f"attrs: must be JSON-able ({exc})")
        parts = comm.allgather({"problems": problems, "shared": sorted(shared)})
        all_problems = [p for part in parts for p in part["problems"]]
        for r, part in enumerate(parts[1:], start=1):  # a shared array rank 0 lacks would be lost
            lost = sorted(set(part["shared"]) - set(parts[0]["shared"]))
            if lost:
                all_problems.append(f"arrays {lost}: passed by rank {r} but not by rank 0; shared "
                                    "arrays are stored from rank 0 (per-rank ones need a 'rank{r}/' prefix)")
        if all_problems:
            raise ValueError("; ".join(all_problems))

        partial = self.directory / f".{checkpoint_name(tag)}.partial"
        final = self.path(tag)
        failure, error = None, None
        if comm.is_root:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                _create_empty(partial)  # a read-only, vanished or full file system fails here, errno intact
            except OSError as exc:
                if is_storage_errno(exc):
                    failure = StorageError.from_oserror(exc, final).to_dict()
                else:
                    error = f"{self.directory}: cannot create the checkpoint directory ({exc})"
        failure, error = comm.bcast([failure, error])
        if failure:
            raise StorageError(**failure, report=comm.is_root)
        if error:
            raise CheckpointError(error)

        def write(keep):
            f = h5.open_h5(partial, "w", comm, self.driver, libver="v108")
            keep(f)
            meta = h5.write_owned(f, owned, comm, group=ARRAYS_GROUP)
            manifest = {n: m["sha256"] for n, m in meta.items()}
            h5.write_attrs(f, {"tag": tag, "attrs_json": attrs_json or "", "manifest_json":
                               json.dumps(manifest, sort_keys=True), "writer_size": comm.size,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, comm)
            if f is not None:
                f.flush()
            # kill tests: die with the data written, not yet complete; disk-fault tests: fail here
            faults.maybe_fail("ckpt_write", partial)
            h5.write_attrs(f, {"complete": 1}, comm)
            return meta, manifest

        # a file-system failure: the partial file goes, the pointer is untouched
        meta, manifest = guarded_h5_write(partial, final, h5.resolve_driver(comm, self.driver) == "mpio", write)

        pointer, failure = None, None
        if comm.is_root:
            try:
                pointer = self._commit(tag, partial, meta, manifest)
            except OSError as exc:
                if not is_storage_errno(exc):
                    failure = {"error": f"checkpoint {tag}: commit failed ({exc})"}
                else:
                    failure = StorageError.from_oserror(exc).to_dict()
        pointer, failure = comm.bcast([pointer, failure])
        if failure and "error" in failure:
            raise CheckpointError(failure["error"])
        if failure:
            raise StorageError(**failure, report=comm.is_root)
        return pointer

    def _commit(self, tag: int, partial: Path, meta: dict, manifest: dict) -> dict:
        """Rank 0: fsync, rename into place, switch the pointer, prune.  On an OSError
        (naming the file that failed) the new file is gone and the old pointer stays current."""
        final = self.path(tag)
        try:
            fsync_file(partial)
            os.replace(partial, final)
        except OSError as exc:
            unlink_quietly(partial)
            if exc.errno is not None and exc.filename2 is None:  # (a failed rename names both)
                exc.filename = os.fspath(final)
            raise
        fsync_dir(self.directory)
        pointer = {
            "file": final.name, "tag": tag, "file_size": final.stat().st_size,
            "n_arrays": len(meta), "layout": h5.LAYOUT_VERSION, "writer_size": self.comm.size,
            "nbytes": int(sum(np.dtype(m["dtype"]).itemsize * int(np.prod(m["shape"], dtype=np.int64))
                              for m in meta.values())),
            "manifest_sha256": manifest_digest(manifest),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            atomic_write_json(self.directory / POINTER, pointer, fault_site="ckpt_pointer")
        except OSError:
            old = self.pointer()
            if old is None or old.get("file") != final.name:  # never delete what the pointer names
                unlink_quietly(final)
            raise
        try:
            self._prune(tag)
        except OSError:  # the new checkpoint is current; pruning is retried at the next save
            pass
        return pointer

    def _prune(self, current: int) -> None:
        """Keep the ``keep`` newest tags <= ``current``; drop newer tags (an abandoned
        timeline: the pointer is the authority) and leftover partial files."""
        tags = self.tags()
        older = [t for t in tags if t <= current]
        doomed = [t for t in tags if t > current] + older[: max(0, len(older) - self.keep)]
        for t in doomed:
            self.path(t).unlink(missing_ok=True)
        for p in self.directory.iterdir():
            if _PARTIAL_RE.match(p.name):
                p.unlink(missing_ok=True)
        fsync_dir(self.directory)

    # -- load ---------------------------------------------------------------------------------------
    def load_latest(self, all_ranks: bool = False) -> tuple[int, dict[str, np.ndarray], dict] | None:
        """``(tag, arrays, attrs)`` of the newest intact checkpoint, or None if there is none.

        Each rank gets the shared arrays and its own ``rank{r}/`` ones (``all_ranks=True``:
        every array).  Raises CheckpointError when checkpoint files (or a pointer) exist
        but none is intact; the message lists every candidate and why it was rejected.
        """
        comm = self.comm
        choice = self._choose() if comm.is_root else None
        choice = comm.bcast(choice)
        if choice is None:
            return None
        if "error" in choice:
            raise CheckpointError(choice["error"])
        path, error, result = self.directory / choice["file"], None, None
        try:
            with h5.open_h5(path, "r", Comm.serial()) as f:
                attrs = h5.read_attrs(f)
                manifest = json.loads(attrs["manifest_json"])
                names = [n for n in manifest if all_ranks or owner_of(n) in (None, comm.rank)]
                arrays = h5.read_arrays(f, ARRAYS_GROUP, names) if names else {}
                bad = [n for n in names if h5.array_checksum(arrays[n]) != manifest[n]]
                if bad:
                    error = f"{path.name}: datasets {bad} fail their checksum on rank {comm.rank}"
                user_attrs = json.loads(attrs["attrs_json"]) if attrs["attrs_json"] else {}
                result = (int(attrs["tag"]), arrays, user_attrs)
        except Exception as exc:  # noqa: BLE001 - reported collectively below
            error = f"{path.name}: unreadable on rank {comm.rank} ({type(exc).__name__}: {exc})"
        errors = [e for e in comm.allgather(error) if e]
        if errors:
            raise CheckpointError("checkpoint changed while loading: " + "; ".join(errors))
        return result

    def _choose(self) -> dict | None:
        """Rank 0: ``{"file", "tag"}`` of the first intact candidate, ``{"error"}`` or None."""
        pointer_exists = (self.directory / POINTER).exists()
        ptr = self.pointer()
        rejected: list[str] = []
        inspected: dict[str, tuple[str | None, str | None]] = {}

        def look(name: str):
            if name not in inspected:
                inspected[name] = inspect_file(self.directory / name)
            return inspected[name]

        if ptr is not None and isinstance(ptr.get("file"), str) and _FILE_RE.match(ptr["file"]):
            reason, digest = look(ptr["file"])
            if reason is None and digest != ptr.get("manifest_sha256"):
                reason = "manifest differs from the pointer's manifest_sha256"
            if reason is None:
                return {"file": ptr["file"], "tag": int(_FILE_RE.match(ptr["file"]).group(1))}
            rejected.append(f"{POINTER} -> {ptr['file']}: {reason}")
        elif pointer_exists:
            rejected.append(f"{POINTER}: unreadable or not a checkpoint pointer")
        for t in reversed(self.tags()):
            name = checkpoint_name(t)
            reason, _ = look(name)
            if reason is None:  # intact, e.g. renamed into place just before a crash
                return {"file": name, "tag": t}
            rejected.append(f"{name}: {reason}")
        if not rejected:
            return None
        return {"error": f"no usable checkpoint in {self.directory}: " + "; ".join(dict.fromkeys(rejected))}
