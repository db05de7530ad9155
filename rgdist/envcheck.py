"""``rgdist check-env``: what MPI, HDF5, torch and threads this process sees."""
from __future__ import annotations

import os
import shutil
import subprocess


def _mpirun_version() -> str | None:
    exe = shutil.which("mpirun") or shutil.which("mpiexec")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def collect() -> dict:
    """A dict of facts about the environment (never raises)."""
    info: dict = {}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = bool(torch.cuda.is_available())
        info["cuda_devices"] = torch.cuda.device_count() if info["cuda"] else 0
        info["torch_threads"] = torch.get_num_threads()
    except Exception as exc:  # pragma: no cover - torch is a hard dependency
        info["torch"] = f"unavailable ({exc})"
    try:
        from rgdist.parallel.comm import mpi_info

        info.update({f"mpi_{k}": v for k, v in mpi_info().items()})
    except Exception as exc:
        info["mpi_error"] = str(exc)
    info["mpirun"] = _mpirun_version()
    lib = str(info.get("mpi_library", ""))
    run = str(info.get("mpirun") or "")
    if lib and run:
        import re

        lv = re.search(r"(\d+\.\d+\.\d+)", lib)
        rv = re.search(r"(\d+\.\d+\.\d+)", run)
        same_vendor = ("open mpi" in lib.lower()) == ("open mpi" in run.lower() or "openrte" in run.lower())
        info["mpirun_matches_library"] = bool(lv and rv and lv.group(1) == rv.group(1) and same_vendor)
    try:
        from rgdist.io.h5 import h5_info

        info.update(h5_info())
    except Exception as exc:
        info["h5py_error"] = str(exc)
    info["cpu_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    return info


def format_report(info: dict) -> str:
    width = max(len(k) for k in info)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in info.items())
