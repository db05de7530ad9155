"""Does the DSM loss see the learned flow's miss? The trained EMA score models of several
finished runs of one physical point, evaluated on ONE common set of configurations with
common noise draws (common random numbers: the irreducible part of the loss is the same for
every model and cancels in their differences), per flow time t:

    python benchmarks/flow_window_loss.py --data runs/polch_seed2 --m2 -1.27 \
        --models runs/polch_seed2 runs/polch_seed3 ... --out benchmarks/results/flow_window_loss.json

Per model and t: the sigma-weighted DSM loss per site (all modes), its zero-mode part and the
part of the lowest non-zero momentum shell, mean over configurations x draws with its error,
and the difference to the first model with the error of the paired difference. The models'
runs must have the same lattice and scheme; their own data are not used (``--data`` supplies
the configurations, so a model is evaluated on data it was not trained on unless it is
``--data``'s own). Prints JSON (and writes it with --out).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from flow_step_check import handover_arrays, point_of, trained_model  # benchmarks/ is sys.path[0]
from rgdist.lattice import Lattice


def mode_losses(model, scheme, lattice, phi0, t: float, gen, batch: int):
    """(total, zero mode, first shell) per configuration: sigma-weighted DSM terms per site."""
    V = lattice.volume
    p2 = lattice.phat2()
    shell = (p2 > 0) & torch.isclose(p2, p2[p2 > 0].min())
    mdtype = next(model.parameters()).dtype
    out = []
    for i in range(0, phi0.shape[0], batch):
        x = phi0[i:i + batch]
        tt = torch.full((x.shape[0],), t, dtype=torch.float64)
        phi_t, eps = scheme.sample_forward(x, tt, gen)
        Sigma = scheme.Sigma(tt)
        with torch.no_grad():
            s = model(phi_t.to(mdtype), tt.to(mdtype)).to(torch.float64)
        noised = Sigma > 0
        inv = torch.where(noised, 1 / torch.where(noised, Sigma, torch.ones_like(Sigma)), 0 * Sigma)
        per = Sigma * (lattice.fft(s) + lattice.fft(eps) * inv).abs() ** 2 / V**2
        per = torch.where(noised, per, 0 * per)
        out.append(torch.stack([per.sum(lattice.dims), per[(slice(None),) + (0,) * lattice.d],
                                per[:, shell].sum(1)], 1))
    return torch.cat(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="run dir whose HMC configurations are used")
    ap.add_argument("--models", nargs="+", required=True, help="run dirs of the trained models")
    ap.add_argument("--m2", type=float, required=True)
    ap.add_argument("--t", type=float, nargs="+",
                    default=[1.0, 1.25, 1.375, 1.5, 1.625, 1.75, 2.0])
    ap.add_argument("--draws", type=int, default=2, help="noise draws per configuration and t")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    c, p = point_of(Path(a.data), a.m2)
    lattice = Lattice(tuple(p.shape))
    data = torch.as_tensor(handover_arrays(Path(a.data) / "points" / p.point_id)["data/configs"])
    phi0 = data.repeat(a.draws, *([1] * lattice.d))
    res = {"data": a.data, "m2": a.m2, "t": a.t, "n_terms": int(phi0.shape[0]), "seed": a.seed,
           "models": {}}
    terms = {}
    for rd in a.models:
        cm, pm = point_of(Path(rd), a.m2)
        model, scheme = trained_model(cm, pm, Path(rd))
        per_t = []
        for k, t in enumerate(a.t):
            gen = torch.Generator().manual_seed(a.seed * 1000 + k)  # same draws for every model
            per_t.append(mode_losses(model, scheme, lattice, phi0, t, gen, 1024))
        terms[rd] = torch.stack(per_t)  # (K, n, 3)
    ref = terms[a.models[0]]
    n = ref.shape[1]
    for rd, x in terms.items():
        m, e = x.mean(1), x.std(1) / np.sqrt(n)
        d = x - ref
        dm, de = d.mean(1), d.std(1) / np.sqrt(n)
        res["models"][rd] = {
            part: {"mean": [float(v) for v in m[:, j]], "err": [float(v) for v in e[:, j]],
                   "minus_first": [float(v) for v in dm[:, j]],
                   "minus_first_err": [float(v) for v in de[:, j]]}
            for j, part in enumerate(("all_modes", "zero_mode", "first_shell"))}
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
