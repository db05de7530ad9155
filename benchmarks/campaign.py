"""Campaign benchmark: wall time of one campaign on 1 vs 2 MPI ranks (strong scaling), a
campaign twice as large on 2 ranks (weak scaling), checkpoint write/read time and size per
point, and the checkpoint overhead as a fraction of run time at the default cadence.

Prints JSON on stdout and a table on stderr. ``--quick``: smaller campaign.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAMPAIGN = """\
schema_version: 1
name: bench
seed: 3
lattice: {{N: [{N}], d: 2}}
grid: {{m2: {m2}, lam: [1.0]}}
scheme: {{name: carosso, T: 20.0, mu2: 0.1}}
model: {{name: conv, channels: 8, blocks: 1, gaussian_exact: true, dtype: float32}}
train: {{steps: {steps}, batch_size: 64, warmup: 10}}
sample: {{n_samples: 256, batch_size: 128, n_steps: 40}}
measure: {{n_bins: 16}}
hmc: {{n_chains: 32, chains_per_block: 8, therm: 50, n_traj: 100, thin: 5}}
checkpoint: {{every_steps: 200, every_seconds: 300, keep: 3}}
resources: {{threads: 1}}
output: {{dir: run}}
"""


def run(n_ranks: int, campaign: Path, cwd: Path, run_dir: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", RGDIST_PROGRESS="off",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=str(REPO))
    if n_ranks == 1:
        cmd = [sys.executable, "-m", "rgdist", "run", str(campaign), "--run-dir", run_dir]
        env["RGDIST_NO_MPI"] = "1"
    else:
        cmd = ["mpirun", "-n", str(n_ranks), "-x", "OMP_NUM_THREADS", "-x", "RGDIST_PROGRESS",
               "-x", "PYTHONPATH", sys.executable, "-m", "mpi4py", "-m", "rgdist", "run",
               str(campaign), "--run-dir", run_dir]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"campaign failed ({cmd}):\n{out.stderr[-3000:]}")
    return wall


def checkpoint_stats(run_dir: Path) -> dict:
    """Mean checkpoint write time/size per point from the runner's timings, and a read."""
    from rgdist.io.checkpoint import CheckpointStore
    from rgdist.parallel.comm import Comm

    writes, n, nbytes, stage_s, wall = 0.0, 0, 0, 0.0, 0.0
    for f in (run_dir / "logs").glob("timings-rank*.json"):
        d = json.loads(f.read_text())
        wall = max(wall, d["wall_s"])
        for tm in d["points"].values():
            writes += tm.get("checkpoint_s", 0.0)
            n += tm.get("checkpoints", 0)
            nbytes += tm.get("checkpoint_bytes", 0)
            stage_s += sum(tm.get(k, 0.0) for k in ("hmc", "train", "sample"))
    reads = []
    sizes = []
    for pdir in sorted((run_dir / "points").iterdir()):
        store = CheckpointStore(pdir, Comm.serial())
        t0 = time.perf_counter()
        store.load_latest(all_ranks=True)
        reads.append(time.perf_counter() - t0)
        sizes += [p.stat().st_size for p in pdir.glob("ckpt-*.h5")]
    return {"checkpoints": n, "write_s_mean": writes / max(n, 1),
            "payload_bytes_mean": nbytes / max(n, 1),
            "file_bytes_mean": sum(sizes) / max(len(sizes), 1),
            "read_s_mean": sum(reads) / max(len(reads), 1),
            "overhead_fraction": writes / stage_s if stage_s else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    N, steps = (8, 100) if args.quick else (16, 400)
    tmp = Path(tempfile.mkdtemp(prefix="rgdist-bench-"))
    try:
        small = tmp / "small.yaml"
        small.write_text(CAMPAIGN.format(N=N, m2="[-1.0, -0.9]", steps=steps))
        big = tmp / "big.yaml"
        big.write_text(CAMPAIGN.format(N=N, m2="[-1.0, -0.9, -0.8, -0.7]", steps=steps))
        t1 = run(1, small, tmp, "s1")
        t2 = run(2, small, tmp, "s2")
        tw = run(2, big, tmp, "w2")
        ck = checkpoint_stats(tmp / "s1")
    finally:
        pass
    result = {
        "machine": {"cores": os.cpu_count()}, "N": N, "train_steps": steps,
        "strong": {"points": 2, "wall_1rank_s": t1, "wall_2ranks_s": t2,
                   "speedup": t1 / t2, "efficiency": t1 / (2 * t2)},
        "weak": {"points_per_rank": 2, "wall_1rank_s": t1, "wall_2ranks_2x_s": tw,
                 "efficiency": t1 / tw},
        "checkpoint": ck,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print(f"strong scaling: 1 rank {t1:.1f}s, 2 ranks {t2:.1f}s, efficiency {t1 / (2 * t2):.2f}\n"
          f"weak scaling:   1 rank x2 points {t1:.1f}s, 2 ranks x4 points {tw:.1f}s, efficiency {t1 / tw:.2f}\n"
          f"checkpoint:     {ck['write_s_mean'] * 1e3:.1f} ms write, {ck['read_s_mean'] * 1e3:.1f} ms read, "
          f"{ck['file_bytes_mean'] / 1e6:.2f} MB/file, overhead {100 * ck['overhead_fraction']:.2f}% of run time",
          file=sys.stderr)


if __name__ == "__main__":
    main()
