"""Step refinement of a finished RG-flow point: is a miss of the learned flow the sampler's
discretization or the trained score?

Reloads the trained EMA score model of one point from its run directory (the checkpoint that
hands the trainer to the sampling stage), redraws the learned flow from T down to ``--stop``
with the campaign's solver and grid at ``n_steps`` and at ``factor * n_steps``, and compares
both with the exact (forward) flow of the point's own HMC data at every record time >= stop:

    python benchmarks/flow_step_check.py runs/rg_flow_20x20_polchinski --m2 -1.27 \
        --factors 1 4 --n 2048 --stop 1.0 --out benchmarks/results/flow_step_check.json

Same model, same prior draws (chunk streams from --seed), only the step count differs; a
deviation that moves by more than its error when the steps are refined is discretization,
one that stays is the score's. Prints JSON (and writes it with --out).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rgdist.campaign import build
from rgdist.campaign.spec import parse_campaign
from rgdist.campaign.stages.base import strip
from rgdist.flow.base import FlowAccumulator
from rgdist.flow.forward import accumulate_forward_flow
from rgdist.flow.learned import compare_flows, merged_grid
from rgdist.io import h5
from rgdist.lattice import Lattice, Phi4Action
from rgdist.parallel.comm import Comm
from rgdist.sample.ensemble import draw_chunk
from rgdist.train import measured_spectrum

QUANTITIES = ("m_R", "Z", "lambda_R", "chi", "binder")


def handover_arrays(point_dir: Path) -> dict:
    """The arrays of the newest checkpoint of ``point_dir`` that still holds the trainer."""
    for path in sorted(point_dir.glob("ckpt-*.h5"), reverse=True):
        with h5.open_h5(path, "r", Comm.serial()) as f:
            names = h5.dataset_names(f, "arrays")
            if any(n.startswith("trainer/") for n in names):
                return h5.read_arrays(f, "arrays")
    raise SystemExit(f"error: no checkpoint in {point_dir} holds a trained model (trainer/...)")


def point_of(run_dir: Path, m2: float):
    """(campaign, grid point) of the run directory's point at ``m2`` (exit 2 if none)."""
    c = parse_campaign(json.loads((run_dir / "campaign.json").read_text()), str(run_dir))
    pts = [p for p in c.points() if abs(p.m2 - m2) < 1e-12]
    if len(pts) != 1:
        print(f"error: --m2 {m2}: {run_dir} has m2 {[p.m2 for p in c.points()]}", file=sys.stderr)
        raise SystemExit(2)
    return c, pts[0]


def trained_model(c, p, run_dir: Path, arrays: dict | None = None):
    """(EMA score model, scheme) of point ``p`` of campaign ``c`` from its run directory, built
    as the campaign builds it (its measured spectrum for the Gaussian-exact part)."""
    lattice = Lattice(tuple(p.shape))
    if arrays is None:
        arrays = handover_arrays(run_dir / "points" / p.point_id)
    scheme = build.scheme_for(c.scheme, lattice)
    data = torch.as_tensor(arrays["data/configs"])
    G = measured_spectrum(data, lattice)
    gen = torch.Generator().manual_seed(0)
    model = build.model_for(c.model, lattice, scheme, G, gen, "cpu")
    trainer = build.trainer_for(c.train, c.scheme.t_min, model, scheme, data,
                                Phi4Action(p.m2, p.lam, lattice.d), G, gen, "cpu")
    trainer.load_state_dict(strip("trainer", arrays))
    return trainer.ema_model(), scheme


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--m2", type=float, required=True, help="the point's m2 (standard)")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--n", type=int, default=2048, help="draws per step count")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--stop", type=float, default=1.0, help="integrate from T down to this t")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rd = Path(a.run_dir)
    c, p = point_of(rd, a.m2)
    lattice = Lattice(tuple(p.shape))
    arrays = handover_arrays(rd / "points" / p.point_id)
    ema, scheme = trained_model(c, p, rd, arrays)
    data = torch.as_tensor(arrays["data/configs"])
    G = measured_spectrum(data, lattice)
    mdtype = next(ema.parameters()).dtype

    def score_fn(phi, t):
        with torch.no_grad():
            return ema(phi.to(mdtype), t.to(mdtype)).to(phi.dtype)

    t_rec = np.asarray([t for t in c.measure.record_times if t >= a.stop - 1e-12], dtype=np.float64)
    n_bins = c.measure.n_bins
    bins_all = torch.as_tensor(arrays["data/chain"]) % n_bins
    fwd, _ = accumulate_forward_flow(data, scheme, t_rec, n_bins=n_bins, bins=bins_all,
                                     generator=lambda k: torch.Generator().manual_seed(1000 + k),
                                     batch_size=1024, n_keep=0)
    forward = fwd.result(kind="forward")
    pool = data.mean(dim=lattice.dims)
    out = {"run_dir": str(rd), "point_id": p.point_id, "m2": p.m2, "lam": p.lam, "N": list(p.N),
           "scheme": c.scheme.name, "solver": c.sample.solver, "grid": c.sample.grid,
           "n_draws": a.n, "stop": a.stop, "t": t_rec.tolist(), "seed": a.seed,
           "forward": {q: [float(v) for v in forward[q][0]] for q in QUANTITIES}, "runs": {}}
    for f in a.factors:
        n_steps = f * c.sample.n_steps
        times = merged_grid(scheme, np.asarray(c.measure.record_times), n_steps, c.sample.grid,
                            c.scheme.t_min)
        times = times[times >= a.stop - 1e-12]
        acc = FlowAccumulator(lattice, t_rec, n_bins)
        t0 = time.perf_counter()
        for ci in range(-(-a.n // a.batch)):
            size = min(a.batch, a.n - ci * a.batch)
            g = torch.Generator().manual_seed(a.seed * 100_003 + ci)
            _, rec = draw_chunk(score_fn, scheme, size, g, times, solver=c.sample.solver,
                                prior_G=G, zero_mode_pool=pool, record_times=t_rec,
                                denoise=False, dtype=torch.float64)
            keys = np.asarray(sorted(rec), dtype=np.float64)
            bins = torch.arange(ci * a.batch, ci * a.batch + size) % n_bins
            for k, tk in enumerate(t_rec):
                acc.update(k, rec[float(keys[int(np.argmin(np.abs(keys - tk)))])], bins)
        learned = acc.result(kind="learned")
        dev = compare_flows(forward, learned, QUANTITIES)
        out["runs"][str(n_steps)] = {
            "n_steps_full_grid": n_steps, "core_s": (time.perf_counter() - t0) * a.threads,
            "learned": {q: [[float(v), float(e)] for v, e in zip(*learned[q])] for q in QUANTITIES},
            "dev_sigma": {q: [round(float(v), 3) for v in dev[q]] for q in QUANTITIES}}
    ks = sorted(out["runs"], key=int)
    if len(ks) >= 2:  # coarse - fine, in units of the combined error of the two learned flows
        lo, hi = out["runs"][ks[0]]["learned"], out["runs"][ks[-1]]["learned"]
        out["coarse_minus_fine_sigma"] = {
            q: [round((x[0] - y[0]) / max(np.hypot(x[1], y[1]), 1e-300), 3) for x, y in zip(lo[q], hi[q])]
            for q in QUANTITIES}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    for k in ks:
        print(f"# {k} steps:", {q: max(abs(v) for v in out['runs'][k]['dev_sigma'][q]) for q in QUANTITIES},
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
