"""Deterministic fault injection for the kill tests (``RGDIST_FAULT=site:count``).

``maybe_kill("train_step")`` is called at named sites; when the site has been passed
``count`` times in this process, the process kills itself with SIGKILL, so the test can
check that a resume after a crash at exactly that moment reproduces the uninterrupted run.
Inactive (one dict lookup) when the variable is unset.
"""
from __future__ import annotations

import os
import signal

from rgdist import settings

_spec: tuple[str, int] | None = None
_counts: dict[str, int] = {}
_parsed = False


def _parse() -> None:
    global _spec, _parsed
    _parsed = True
    raw = settings.fault()
    if not raw:
        return
    site, _, count = raw.partition(":")
    _spec = (site, int(count or 1))


def maybe_kill(site: str) -> None:
    if not _parsed:
        _parse()
    if _spec is None or _spec[0] != site:
        return
    _counts[site] = _counts.get(site, 0) + 1
    if _counts[site] >= _spec[1]:
        os.kill(os.getpid(), signal.SIGKILL)
