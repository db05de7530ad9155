"""Exception types shared by every layer."""
from __future__ import annotations

import errno as _errno
import os


class RgdistError(Exception):
    """Base class of the package's own errors."""


class ConfigError(RgdistError, ValueError):
    """Bad user input: names the offending key path and what is allowed (exit code 2)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class CheckpointError(RgdistError):
    """No usable checkpoint (all candidates torn or corrupted)."""


class RunLockedError(RgdistError):
    """Another live job holds the run directory's lock."""


# -- storage failures (exit code 74) ---------------------------------------------------------------
_VANISHED = ("the directory vanished ({})", "restore it (or remount its file system), then rgdist resume {run}")
_DENIED = ("{}", "make the run directory writable for this user, then rgdist resume {run}")

#: errno -> (what happened, the fix); ``{}`` is the system's text, ``{run}`` the run directory
STORAGE_ERRNOS: dict[int, tuple[str, str]] = {
    _errno.ENOSPC: ("no space left on device", "free space, then rgdist resume {run}"),
    _errno.EROFS: ("read-only file system", "remount it read-write or copy the run directory to a "
                   "writable file system, then rgdist resume {run}"),
    _errno.EIO: ("input/output error", "check the storage device and file system, then rgdist resume {run}"),
    _errno.ENOENT: _VANISHED,
    _errno.EACCES: _DENIED,
    _errno.EPERM: _DENIED,
}
if hasattr(_errno, "EDQUOT"):
    STORAGE_ERRNOS[_errno.EDQUOT] = ("disk quota exceeded", "free space or raise the quota, then rgdist resume {run}")
if hasattr(_errno, "ESTALE"):
    STORAGE_ERRNOS[_errno.ESTALE] = _VANISHED

#: errnos that mean a failing file system wherever they come from (reading a user's file never
#: gives them); ENOENT/EACCES/EPERM count only where a write path raises a StorageError itself
ALWAYS_STORAGE = frozenset(e for e in (_errno.ENOSPC, _errno.EROFS, _errno.EIO, getattr(_errno, "EDQUOT", None))
                           if e is not None)

#: seconds a rank that did not report a StorageError waits for the reporting rank's abort
ABORT_GRACE_S = 10.0


def guess_run_dir(path: str | os.PathLike) -> str:
    """The run directory holding ``path``: the nearest ancestor with ``campaign.json``, else the
    folder above ``points/`` (a checkpoint), else the file's folder."""
    p = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(p)
    while True:
        try:
            if os.path.isfile(os.path.join(parent, "campaign.json")):
                return parent
        except OSError:  # pragma: no cover - unreadable ancestors
            pass
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    parts = p.split(os.sep)
    if "points" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("points")
        if i > 0:
            return os.sep.join(parts[:i]) or os.sep
    return os.path.dirname(p)


class StorageError(RgdistError):
    """A write failed because of the file system (disk full, quota, read-only, vanished or
    unwritable directory).  ``str()`` is the one line ``<path>: <what happened>; <the fix>``;
    exit code 74 (rgdist.exitcodes.IO_ERROR).

    ``report``: whether this process prints the line.  When several ranks learn of one failure
    (an error broadcast by a communicator's root), only the rank that saw it reports.
    ``unclean``: an HDF5 handle of the failed write could not be closed; the process must end
    without interpreter finalization (freeing that handle crashes HDF5 1.10).
    """

    exit_code = 74

    def __init__(self, path: str | os.PathLike | None, errno: int, run_dir: str | None = None,
                 report: bool = True, unclean: bool = False):
        self.path = "(a file of the run)" if path is None else os.path.abspath(os.fspath(path))
        self.errno = int(errno)
        self.report = bool(report)
        self.unclean = bool(unclean)
        self.run_dir = run_dir or (guess_run_dir(self.path) if path is not None else "RUN_DIR")
        what, fix = STORAGE_ERRNOS.get(self.errno, ("{}", "fix the file system, then rgdist resume {run}"))
        text = os.strerror(self.errno)
        what = what.format(text[:1].lower() + text[1:])
        super().__init__(f"{self.path}: {what}; {fix.format(run=self.run_dir)}")

    @classmethod
    def from_oserror(cls, exc: OSError, path: str | os.PathLike | None = None, **kw) -> "StorageError":
        if path is None:  # the file being written: a rename's destination, else the file named
            path = exc.filename2 if getattr(exc, "filename2", None) is not None else exc.filename
        return cls(path, exc.errno, **kw)

    def to_dict(self) -> dict:
        """What travels in a broadcast (JSON); rebuild with ``StorageError(**d, report=...)``."""
        return {"path": self.path, "errno": self.errno, "run_dir": self.run_dir}

    def abort(self, comm) -> None:
        """End every rank of an MPI job with :attr:`exit_code`: the reporting rank prints the
        line and aborts at once; another rank that raised the same failure leaves the line to
        it and aborts only if the job still runs after :data:`ABORT_GRACE_S`."""
        import sys
        import time

        if self.report:
            sys.stderr.write(f"error: {self}\n")
            sys.stderr.flush()
        else:
            time.sleep(ABORT_GRACE_S)
        comm.abort(self.exit_code)


def is_storage_errno(exc: BaseException) -> bool:
    """True for an OSError whose errno is one of :data:`STORAGE_ERRNOS`."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_failure(exc: BaseException) -> StorageError | None:
    """The storage failure behind ``exc``, or None.

    The first StorageError raised in the chain of ``exc`` (an error while handling a full disk,
    e.g. writing the status file, is a consequence of it), else an OSError with an errno of
    :data:`ALWAYS_STORAGE` (e.g. a log line that no longer fits).
    """
    chain, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in reversed(chain):  # the deepest is the first raised
        if isinstance(e, StorageError):
            return e
    for e in reversed(chain):
        if isinstance(e, OSError) and e.errno in ALWAYS_STORAGE:
            return StorageError.from_oserror(e)
    return None
