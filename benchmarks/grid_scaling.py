"""Data-parallel efficiency of the shared grid training (model.scope: grid), weak scaling.

The same per-rank work on 1 and on 2 MPI ranks: each rank owns ``--points-per-rank`` grid
points (N x N, batch ``--batch`` per point), and one shared step computes every owned point's
gradient, allgathers the gradients of all points and sums them in point order
(rgdist.train.grid.GridTrainer with the campaign's reduction). Efficiency = t_step(1 rank,
P points) / t_step(2 ranks, 2P points); 1 thread per rank. Timing: ``--steps`` steps after
``--warmup`` untimed ones, wall clock of rank 0 between two barriers; the median of
``--repeats`` runs per rank count (alternating), all runs in the JSON.

    python benchmarks/grid_scaling.py          # runs both rank counts, prints JSON + table
writes benchmarks/results/grid_scaling.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(a) -> None:
    import torch

    from rgdist.campaign.gridscope import _reduce
    from rgdist.lattice import Lattice, Phi4Action
    from rgdist.models import build_model
    from rgdist.models.conditioning import CouplingWindow, condition_model
    from rgdist.parallel.comm import world
    from rgdist.rg import build_scheme
    from rgdist.train import EnsembleData, TrainConfig
    from rgdist.train.grid import GridPointData, GridTrainer

    torch.set_num_threads(1)
    comm = world()
    lat = Lattice(a.N)
    P = a.points_per_rank * comm.size
    m2s = [-1.4 + 0.6 * j / max(1, P - 1) for j in range(P)]
    G = 1.0 / (lat.phat2(dtype=torch.float64) + 1.0)
    scheme = build_scheme("carosso", lat, T=20.0, mu2=0.1)
    model = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=a.channels, blocks=1, generator=torch.Generator().manual_seed(0))
    condition_model(model, CouplingWindow((m2s[0], m2s[-1]), (1.0, 1.0)))
    g = torch.Generator().manual_seed(1)
    owned = [GridPointData(j, m2s[j], 1.0, Phi4Action(m2s[j], 1.0),
                           EnsembleData(torch.randn(256, a.N, a.N, generator=g, dtype=torch.float64)), G)
             for j in range(comm.rank, P, comm.size)]
    cfg = TrainConfig(steps=a.warmup + a.steps, batch_size=a.batch, log_every=0)
    trainer = GridTrainer(model, scheme, owned, cfg, n_points=P,
                          streams=lambda j, k: torch.Generator().manual_seed(1000 * j + k),
                          reduce=_reduce(comm))
    trainer.fit(until=a.warmup)
    comm.barrier()
    t0 = time.perf_counter()
    trainer.fit(until=a.warmup + a.steps)
    comm.barrier()
    dt = (time.perf_counter() - t0) / a.steps
    if comm.is_root:
        print(json.dumps({"ranks": comm.size, "points": P, "s_per_step": dt}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--points-per-rank", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="runs per rank count, alternating")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/grid_scaling.json"))
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "mpi4py", __file__, "--worker", "--N", str(a.N),
            "--points-per-rank", str(a.points_per_rank), "--batch", str(a.batch),
            "--channels", str(a.channels), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    runs = {1: [], 2: []}
    for _ in range(a.repeats):  # alternate, so slow phases of the machine hit both
        for n in (1, 2):
            out = subprocess.run(["mpirun", "-n", str(n), "-x", "OMP_NUM_THREADS", "-x",
                                  "PYTHONPATH", *args], env=env, capture_output=True, text=True,
                                 check=True)
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1])["s_per_step"])
    import statistics

    rows = [{"ranks": n, "points": a.points_per_rank * n, "s_per_step": statistics.median(v),
             "s_per_step_runs": v} for n, v in runs.items()]
    eff = rows[0]["s_per_step"] / rows[1]["s_per_step"]
    result = {"config": {k: v for k, v in vars(a).items() if k not in ("worker", "out")},
              "rows": rows, "weak_scaling_efficiency_2_ranks": eff,
              "device": "cpu (AMD EPYC, 2 cores; 1 thread per rank)"}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"{'ranks':>5s} {'points':>6s} {'s/step':>8s}", file=sys.stderr)
    for r in rows:
        print(f"{r['ranks']:5d} {r['points']:6d} {r['s_per_step']:8.4f}", file=sys.stderr)
    print(f"weak-scaling efficiency at 2 ranks: {eff:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
