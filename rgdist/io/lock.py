"""One job per run directory: an exclusive lock file with a heartbeat.

The lock is ``<run_dir>/rgdist.lock``, created with ``O_CREAT | O_EXCL`` and holding JSON
``{pid, host, proc_start, started, heartbeat_unix, token, argv}``.  Under MPI only rank
0 touches it: either construct ``RunLock(run_dir, comm)`` on every rank (the outcome is
broadcast, so every rank raises or proceeds together), or construct ``RunLock(run_dir)``
on rank 0 only (no communication at all) and broadcast the outcome yourself.

A lock found in place is *stale*, and taken over, when
  * its host is this host and its pid is gone, a zombie, or a different process (the
    recorded ``/proc/<pid>/stat`` start time differs: pid reuse); or
  * its host is another host and its heartbeat is older than ``stale_after_s``.
A live holder on this host is never taken over, even with an old heartbeat: it may be
suspended (``scontrol suspend``) and would resume writing into the directory.

The check-and-take-over runs under ``fcntl.flock`` on ``rgdist.lock.guard`` (held for
milliseconds), so two contenders cannot both remove a stale lock.  flock dies with its
process, so a crash never leaves the guard held.  On NFS, Linux emulates flock with
POSIX locks (works where lockd/NFSv4 locking works); where flock is unsupported (e.g.
Lustre without ``-o flock``) the guard is skipped and ``O_EXCL`` (atomic on NFSv3+ and
Lustre) still prevents two simultaneous fresh acquisitions.  Heartbeats compare wall
clocks of different hosts: clock skew must stay well below ``stale_after_s``.

While held, a daemon thread refreshes the heartbeat every ``heartbeat_s`` seconds and
notices if the lock was taken away (:meth:`RunLock.check` then raises).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from rgdist.errors import RunLockedError
from rgdist.io.atomic import atomic_write_json, fsync_dir
from rgdist.parallel.comm import Comm

LOCK_NAME = "rgdist.lock"
GUARD_NAME = "rgdist.lock.guard"


__all__ = ["RunLock", "RunLockedError", "lock_holder", "staleness", "pid_alive", "proc_start_time"]


def proc_start_time(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def lock_holder(run_dir: str | os.PathLike, stale_after_s: float = 900.0) -> str | None:
    """A description of the live job holding ``run_dir``'s lock, or None when the lock is
    absent or stale (for ``rgdist status``; local, read-only)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return None
    info = _read(path)
    if info is None:
        return describe_holder(None)
    return None if staleness(info, stale_after_s) else describe_holder(info)


def describe_holder(info: dict | None) -> str:
    if not info:
        return "an unknown holder (unreadable lock file)"
    started = info.get("started", "?")
    age = time.time() - float(info.get("heartbeat_unix", 0) or 0)
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {started}, "
            f"last heartbeat {age:.0f} s ago")


def staleness(info: dict | None, stale_after_s: float, unreadable_age_s: float | None = None) -> str | None:
    """Why the lock described by ``info`` may be taken over, or None while its holder lives."""
    if not info:
        if unreadable_age_s is None or unreadable_age_s > 60.0:
            return "lock file unreadable (its writer died while writing it)"
        return None
    host = socket.gethostname()
    try:
        pid = int(info.get("pid", -1))
        beat = float(info.get("heartbeat_unix", 0))
    except (TypeError, ValueError):
        return "lock file content malformed"
    if info.get("host") == host:
        if not pid_alive(pid):
            return f"holder pid {pid} is no longer running"
        recorded, actual = info.get("proc_start"), proc_start_time(pid)
        if recorded and actual and recorded != actual:
            return f"pid {pid} now belongs to another process"
        return None
    age = time.time() - beat
    if age > stale_after_s:
        return f"heartbeat of host {info.get('host')} is {age:.0f} s old (> {stale_after_s:.0f} s)"
    return None


@contextmanager
def _guard(directory: Path):
    """Exclusive flock on the guard file for a short critical section (skipped if unsupported)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield False
        return
    fd = os.open(directory / GUARD_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        yield locked
    finally:
        os.close(fd)  # releases the flock


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


class RunLock:
    """Context manager holding ``<run_dir>/rgdist.lock`` for this job (rank 0 of ``comm``).

    Raises :class:`rgdist.errors.RunLockedError` naming the holder when a live job holds
    it.  ``comm=None``: purely local (call on one process only); with a Comm,
    :meth:`acquire` is collective.  After acquiring, ``took_over`` says why a stale lock
    was replaced (None if there was none).
    """

    def __init__(self, run_dir: str | os.PathLike, comm: Comm | None = None,
                 stale_after_s: float = 900.0, heartbeat_s: float = 60.0):
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s: must be > 0, got {stale_after_s}")
        if not 0 < heartbeat_s < stale_after_s:
            raise ValueError(f"heartbeat_s: must be in (0, stale_after_s={stale_after_s}), got {heartbeat_s}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.comm = Comm.serial() if comm is None else comm
        self.stale_after_s = float(stale_after_s)
        self.heartbeat_s = float(heartbeat_s)
        self.token: str | None = None
        self.lost: str | None = None
        self.took_over: str | None = None  # why a stale lock was replaced, if one was
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public -------------------------------------------------------------------------------------
    def acquire(self) -> "RunLock":
        """Take the lock (collective).  Raises RunLockedError on every rank if refused."""
        outcome = None
        if self.comm.is_root:
            try:
                self._acquire_root()
                outcome = {"ok": True, "took_over": self.took_over}
            except (RunLockedError, OSError) as exc:
                outcome = {"ok": False, "error": str(exc)}
        outcome = self.comm.bcast(outcome)
        if not outcome["ok"]:
            raise RunLockedError(outcome["error"])
        self.took_over = outcome["took_over"]
        return self

    def release(self) -> None:
        """Drop the lock if it is still ours (rank 0; no communication, so it is safe on
        an exception path where the other ranks are elsewhere)."""
        if self.comm.is_root and self.token is not None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            with _guard(self.run_dir):
                info = _read(self.path)
                if info is not None and info.get("token") == self.token:
                    self.path.unlink(missing_ok=True)
                    fsync_dir(self.run_dir)
            self.token = None

    def heartbeat(self) -> None:
        """Refresh the heartbeat now (rank 0); raise RunLockedError if the lock was lost."""
        if self.comm.is_root and self.token is not None:
            with _guard(self.run_dir):
                info = _read(self.path)
                if info is None or info.get("token") != self.token:
                    self.lost = f"lock {self.path} was taken by {describe_holder(info)}"
                else:
                    info["heartbeat_unix"] = time.time()
                    atomic_write_json(self.path, info)
        self.check()

    def check(self) -> None:
        """Raise RunLockedError if the heartbeat thread found the lock taken away (local)."""
        if self.lost:
            raise RunLockedError(self.lost)

    def holder(self) -> dict | None:
        """The current lock file's content (local read)."""
        return _read(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- rank 0 internals ---------------------------------------------------------------------------
    def _content(self) -> dict:
        now = time.time()
        return {
            "pid": os.getpid(), "host": socket.gethostname(), "proc_start": proc_start_time(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
            "heartbeat_unix": now, "token": self.token, "argv": sys.argv[:8],
        }

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self._content(), fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.run_dir)
        return True

    def _acquire_root(self) -> None:
        if self.token is not None:
            raise RunLockedError(f"{self.path}: this RunLock is already held")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        try:
            with _guard(self.run_dir) as guarded:
                if not self._create():
                    info = _read(self.path)
                    try:
                        age = time.time() - self.path.stat().st_mtime
                    except FileNotFoundError:
                        age = 0.0
                    reason = staleness(info, self.stale_after_s, None if guarded else age)
                    if reason is None:
                        raise RunLockedError(f"run directory {self.run_dir} is in use by "
                                             f"{describe_holder(info)} (lock {self.path})")
                    self.path.unlink(missing_ok=True)
                    if not self._create():
                        raise RunLockedError(f"{self.path}: another job took the lock concurrently")
                    self.took_over = f"took over a stale lock: {reason}"
        except BaseException:
            self.token = None
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="rgdist-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except RunLockedError:
                return
            except OSError as exc:  # a transient file-system error: try again next period
                print(f"rgdist: lock heartbeat failed: {exc}", file=sys.stderr)
