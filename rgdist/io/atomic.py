"""Crash-safe file replacement: readers see the old content or the new, never a mix.

Recipe: write a temporary file in the target's directory (same file system, so the
rename is atomic), ``fsync`` it, ``os.replace`` it onto the target, then ``fsync`` the
directory so the rename itself survives a power cut.

When the file system fails (disk full, quota, read-only, vanished directory) the temporary
file is removed, the target keeps its old content, and the OSError is re-raised with
``filename`` set to the target (a failing ``write`` names no file by itself).
"""
from __future__ import annotations

import contextlib
import errno as errno_
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rgdist import faults

T = TypeVar("T")


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a directory entry change (rename, create, unlink) to disk; no-op where unsupported."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data (written by this or another process on this node) to disk."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644,
                       fault_site: str | None = None) -> Path:
    """Replace ``path`` by ``data`` atomically (permissions ``mode`` minus the umask).

    ``fault_site``: a :mod:`rgdist.faults` site passed after the data are written (tests).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        if exc.errno is not None:
            exc.filename = os.fspath(path)
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fault_site is not None:
                faults.maybe_fail(fault_site, path)
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename2 is None:
            exc.filename = os.fspath(path)  # the target, not the temporary (a rename names both)
        raise
    fsync_dir(directory)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2,
                      fault_site: str | None = None) -> Path:
    """Write ``obj`` as UTF-8 JSON (sorted keys, trailing newline) atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"), fault_site=fault_site)


_ERRNO_TEXT = re.compile(r"errno = (\d+)")


def errno_of(exc: BaseException) -> int | None:
    """The errno of an OSError, or the ``errno = N`` an HDF5 error message quotes."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return code
    m = _ERRNO_TEXT.search(str(exc))
    return int(m.group(1)) if m and int(m.group(1)) in errno_.errorcode else None


@contextlib.contextmanager
def surfaced_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Raise, at the end of the block, a write error that a library only reported as
    "Exception ignored in ..." (``sys.unraisablehook``, or ``sys.excepthook``, which Cython
    calls first to print the traceback).

    h5py closes datasets in ``__dealloc__``, where HDF5 writes its cached raw data: a disk
    that fills up there (ENOSPC) never reaches the caller, and the file would look complete.
    Inside the block such errors with an errno are recorded instead of printed; the first
    becomes ``OSError(errno, strerror, path)``.  Others go to the previous hook as before.
    """
    caught: list[BaseException] = []
    previous, previous_except = sys.unraisablehook, sys.excepthook

    def hook(unraisable):
        if unraisable.exc_value is not None and errno_of(unraisable.exc_value) is not None:
            caught.append(unraisable.exc_value)
        else:
            previous(unraisable)

    def except_hook(kind, value, tb):  # Cython prints a __dealloc__ error's traceback this way first
        if value is not None and errno_of(value) is not None:
            caught.append(value)
        else:
            previous_except(kind, value, tb)

    sys.unraisablehook, sys.excepthook = hook, except_hook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous, previous_except
    if caught:
        code = errno_of(caught[0])
        raise OSError(code, os.strerror(code), os.fspath(path)) from caught[0]


def unlink_quietly(path: str | os.PathLike) -> None:
    """Remove ``path`` if it can be removed (a failed write's leftovers)."""
    try:
        os.unlink(path)
    except OSError:
        pass


#: HDF5 handles whose close failed after a write error (kept: freeing them crashes HDF5 1.10)
_UNCLOSABLE: list = []


def discard_failed_write(f, collective: bool, partial: str | os.PathLike) -> bool:
    """After a failed HDF5 write: close a serial-driver handle ``f`` and remove ``partial``.

    An mpio close is collective (so is reading ``f.driver``) and the other ranks may not join
    it, so a collective handle is left open.  Closing after the failure repeats its errors
    (h5py prints them from ``__dealloc__``): they are the failure being reported and are not
    printed.  Returns True when an HDF5 handle is left open: after a failed write HDF5 1.10
    can neither close the file nor free it safely, so the handle stays referenced and the
    process should end without finalization (:attr:`rgdist.errors.StorageError.unclean`,
    see rgdist.cli.main).
    """
    unclean = f is not None
    try:
        with surfaced_write_errors(partial):
            if f is not None and not collective:
                try:
                    f.close()
                    unclean = False
                except Exception:  # noqa: BLE001 - the file is being thrown away
                    _UNCLOSABLE.append(f)
    except OSError:  # a repeated write error of the close: the handle may be half closed
        if f is not None:
            unclean = True
            _UNCLOSABLE.append(f)
    unlink_quietly(partial)
    return unclean


def guarded_h5_write(partial: str | os.PathLike, final: str | os.PathLike, collective: bool,
                     body: Callable[[Callable[[Any], None]], T]) -> T:
    """Run ``body(keep)``, which opens the HDF5 file ``partial``, hands the handle to ``keep``
    (None on a rank that holds none) and writes it; then close the handle.

    A file-system failure (an errno of :data:`rgdist.errors.STORAGE_ERRNOS`, also one h5py
    only printed, see :func:`surfaced_write_errors`) removes ``partial`` and raises
    :class:`rgdist.errors.StorageError` naming ``final``; the rank that sees it raises at once
    (under MPI that aborts the job, since the others may wait in a collective it will not
    join).  Any other error closes the handle and propagates.
    """
    from rgdist.errors import STORAGE_ERRNOS, StorageError

    handle: list = []
    try:
        with surfaced_write_errors(partial):  # h5py swallows write errors of dataset closes
            out = body(handle.append)
            f = handle.pop() if handle else None
            if f is not None:
                f.close()
        return out
    except BaseException as exc:
        f = handle[-1] if handle else None
        code = errno_of(exc) if isinstance(exc, Exception) else None
        if code not in STORAGE_ERRNOS:
            if f is not None:
                f.close()
            raise
        unclean = discard_failed_write(f, collective, partial)
        raise StorageError(final, code, unclean=unclean) from exc


def read_json(path: str | os.PathLike) -> Any:
    """Parse a UTF-8 JSON file."""
    with open(path, "rb") as fh:
        return json.loads(fh.read().decode("utf-8"))
