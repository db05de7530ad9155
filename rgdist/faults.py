"""Deterministic fault injection for the kill and disk-fault tests.

``RGDIST_FAULT=site:count[:kind[:rank]]``.  :func:`maybe_fail` (alias :func:`maybe_kill`) is
called at named sites; from the ``count``-th time the site is passed in this process on:

* ``kind = kill`` (the default): the process kills itself with SIGKILL, so a test can check
  that a resume after a crash at exactly that moment reproduces the uninterrupted run;
* ``kind = enospc | edquot | erofs | enoent | eacces | eio``: the site raises
  ``OSError(errno.<KIND>)`` naming the file being written, as the file system would.

``rank``: only the process with that rank in MPI_COMM_WORLD fails (default: every process).

Sites: ``hmc_traj``, ``train_step``, ``sample_chunk``, ``correct_chunk``, ``baseline_step``
(pipeline steps), ``baseline_sample`` (the baseline's draws made, its stage not yet finished),
``ckpt_write`` (a checkpoint's data written, not yet complete), ``ckpt_pointer`` (the
checkpoint file renamed into place, ``current.json`` being replaced), ``results_write``
(results.h5's data written, not yet closed).  Inactive (one check) when the variable is unset.
"""
from __future__ import annotations

import errno
import os
import signal

from rgdist import settings

KINDS = {"kill": None, "enospc": errno.ENOSPC, "erofs": errno.EROFS, "enoent": errno.ENOENT,
         "eacces": errno.EACCES, "eio": errno.EIO}
if hasattr(errno, "EDQUOT"):
    KINDS["edquot"] = errno.EDQUOT

_spec: tuple[str, int, str, int | None] | None = None
_counts: dict[str, int] = {}
_parsed = False


def parse(raw: str) -> tuple[str, int, str, int | None]:
    """``(site, count, kind, rank)`` of an ``RGDIST_FAULT`` value; ConfigError when malformed."""
    from rgdist.errors import ConfigError

    parts = raw.split(":")
    allowed = (f"must look like site:count[:kind[:rank]] with count >= 1, kind one of "
               f"{', '.join(KINDS)} and rank >= 0, got {raw!r}")
    if not 1 <= len(parts) <= 4 or not parts[0]:
        raise ConfigError("RGDIST_FAULT", allowed)
    try:
        count = int(parts[1]) if len(parts) > 1 and parts[1] else 1
        rank = int(parts[3]) if len(parts) > 3 and parts[3] else None
    except ValueError:
        raise ConfigError("RGDIST_FAULT", allowed) from None
    kind = parts[2] if len(parts) > 2 and parts[2] else "kill"
    if count < 1 or kind not in KINDS or (rank is not None and rank < 0):
        raise ConfigError("RGDIST_FAULT", allowed)
    return parts[0], count, kind, rank


def reset() -> None:
    """Forget the parsed variable and the counts (tests that change RGDIST_FAULT in-process)."""
    global _spec, _parsed
    _spec, _parsed = None, False
    _counts.clear()


def _parse() -> None:
    global _spec, _parsed
    _parsed = True
    raw = settings.fault()
    if raw:
        _spec = parse(raw)


def maybe_fail(site: str, path: str | os.PathLike | None = None) -> None:
    """Kill the process or raise the configured OSError (naming ``path``) at ``site``."""
    if not _parsed:
        _parse()
    if _spec is None or _spec[0] != site:
        return
    _, count, kind, rank = _spec
    if rank is not None:
        from rgdist.parallel.comm import world

        if world().rank != rank:
            return
    _counts[site] = _counts.get(site, 0) + 1
    if _counts[site] < count:
        return
    code = KINDS[kind]
    if code is None:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    raise OSError(code, os.strerror(code), None if path is None else os.fspath(path))


maybe_kill = maybe_fail  #: the name the pipeline sites use
