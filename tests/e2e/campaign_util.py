"""Helpers for the end-to-end campaign tests: a tiny campaign and subprocess runners."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TINY = """\
schema_version: 1
name: tiny
seed: 11
lattice: {{N: [8], d: 2}}
grid: {{m2: [-0.7, -0.4], lam: [0.5, 1.0]}}
scheme: {{name: carosso, T: 10.0, mu2: 0.3}}
model: {{name: conv, channels: 4, blocks: 1, gaussian_exact: true}}
train: {{steps: {train_steps}, batch_size: 16, warmup: 2}}
sample: {{n_samples: 32, batch_size: 8, n_steps: {sample_steps}}}
measure: {{n_bins: 8, record_times: [0.5, 5.0]}}
hmc: {{n_chains: 8, chains_per_block: 2, therm: 6, n_traj: 16, thin: 2}}
checkpoint: {{every_steps: {every}, every_seconds: null, keep: 2}}
resources: {{threads: 1}}
output: {{dir: run}}
"""


def write_tiny(tmp: Path, train_steps=12, sample_steps=8, every=3, name="tiny.yaml") -> Path:
    path = tmp / name
    path.write_text(TINY.format(train_steps=train_steps, sample_steps=sample_steps, every=every))
    return path


def env(**extra) -> dict:
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "RGDIST_PROGRESS": "off", "PYTHONPATH": str(REPO)})
    e.pop("RGDIST_FAULT", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def rgdist(args, cwd, timeout=600, **extra) -> subprocess.CompletedProcess:
    """`python -m rgdist ARGS` as one process (serial fallback, no MPI)."""
    return subprocess.run([sys.executable, "-m", "rgdist", *args], cwd=cwd, env=env(RGDIST_NO_MPI=1, **extra),
                          capture_output=True, text=True, timeout=timeout)


def mpirun(n, args, cwd, timeout=900, **extra) -> subprocess.CompletedProcess:
    """`mpirun -n N python -m mpi4py -m rgdist ARGS`."""
    e = env(OMPI_ALLOW_RUN_AS_ROOT=1, OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1,
            OMPI_MCA_rmaps_base_oversubscribe=1, **extra)
    cmd = ["mpirun", "-n", str(n), "--oversubscribe"]
    for k in ("RGDIST_FAULT", "RGDIST_PROGRESS", "OMP_NUM_THREADS", "PYTHONPATH"):
        if k in e:
            cmd += ["-x", k]
    cmd += [sys.executable, "-m", "mpi4py", "-m", "rgdist", *args]
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def digest(run_dir: Path) -> dict:
    from rgdist.io.results import content_digest

    return content_digest(Path(run_dir) / "results.h5")
