"""Environment variables (``RGDIST_*``): the one table of them, and the package's only reader.

``PACKAGE`` are read by the package (through the functions below); ``SCRIPTS`` by the shell
scripts and the test suite (listed here so the README's table and this module cannot
disagree: a test checks that every ``RGDIST_*`` name in the repository is in one of them).
"""
from __future__ import annotations

import os

PACKAGE = {
    "RGDIST_NO_MPI": "1: never import mpi4py (serial fallback, rank 0 of 1, even under mpirun)",
    "RGDIST_DEVICE": "device policy override: auto | cpu | cuda (replaces resources.device)",
    "RGDIST_NUM_THREADS": "torch threads per rank (default: cores of the process / ranks on the node)",
    "RGDIST_PROGRESS": "progress display: bar | log | off (default: bar on a TTY, else log)",
    "RGDIST_FAULT": "fault injection for the kill tests, <site>:<count>[:<errno name>] "
                    "(see rgdist.faults)",
}
SCRIPTS = {
    "RGDIST_VENV": "virtual environment of scripts/*.sh (default .venv)",
    "RGDIST_WHEEL_CACHE": "where scripts/setup.sh caches the parallel h5py wheel "
                          "(default ~/.cache/rgdist/wheels)",
    "RGDIST_TORCH_SPEC": "the torch requirement scripts/setup.sh installs (default torch==2.13.0, CPU)",
    "RGDIST_RANKS": "MPI ranks of scripts/quickstart.sh (default 2)",
    "RGDIST_TEST_SLOW": "1: scripts/test.sh also runs the long statistical tests (marked slow)",
    "RGDIST_UPDATE_GOLDEN": "1: the golden-file tests rewrite their golden files",
    "RGDIST_GPU_PYTHON": "benchmarks/gpu_check.sh: a Python whose torch sees CUDA",
    "RGDIST_GPU_SETUP": "benchmarks/gpu_check.sh: 1 tries scripts/setup.sh when no such Python exists",
    "RGDIST_WHEELHOUSE": "benchmarks/gpu_check.sh: a folder of wheels to install offline",
}
DEVICE_POLICIES = ("auto", "cpu", "cuda")
PROGRESS_MODES = ("bar", "log", "off")


def get(name: str) -> str | None:
    """The value of package variable ``name`` (None when unset or empty)."""
    if name not in PACKAGE:
        raise ValueError(f"name: unknown setting {name!r}; allowed: {sorted(PACKAGE)}")
    value = os.environ.get(name)
    return None if value is None or value == "" else value


def no_mpi() -> bool:
    return get("RGDIST_NO_MPI") not in (None, "0", "false", "no")


def device_policy() -> str | None:
    """RGDIST_DEVICE, checked (None when unset)."""
    v = get("RGDIST_DEVICE")
    if v is not None and v not in DEVICE_POLICIES:
        raise ValueError(f"RGDIST_DEVICE: must be one of {DEVICE_POLICIES}, got {v!r}")
    return v


def num_threads() -> int | None:
    """RGDIST_NUM_THREADS as a positive int (None when unset)."""
    v = get("RGDIST_NUM_THREADS")
    if v is None:
        return None
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"RGDIST_NUM_THREADS: must be a positive integer, got {v!r}")
    return n


def fault() -> str | None:
    return get("RGDIST_FAULT")


def progress_mode() -> str | None:
    return get("RGDIST_PROGRESS")
