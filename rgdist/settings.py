"""Environment variables (``RGDIST_*``), read in this one place.

RGDIST_NO_MPI=1        never import mpi4py (serial fallback even under mpirun)
RGDIST_DEVICE          device policy override: auto | cpu | cuda
RGDIST_THREADS         torch threads per rank (default: cores on the node / ranks on the node)
RGDIST_FAULT           fault injection for the kill tests: "<site>:<count>", e.g.
                       "train_step:7" kills the process with SIGKILL the 7th time the site
                       is passed (sites: hmc_traj, train_step, sample_chunk, ckpt_write)
RGDIST_PROGRESS        force the progress display: bar | log | off
"""
from __future__ import annotations

import os


def _get(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def no_mpi() -> bool:
    return _get("RGDIST_NO_MPI", "0") not in ("0", "false", "no")


def device_policy(default: str = "auto") -> str:
    return _get("RGDIST_DEVICE", default)


def threads() -> int | None:
    v = _get("RGDIST_THREADS")
    return int(v) if v else None


def fault() -> str | None:
    return _get("RGDIST_FAULT")


def progress_mode() -> str | None:
    return _get("RGDIST_PROGRESS")
