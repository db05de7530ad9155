"""Fourier-accelerated HMC data for the benchmarks: kept configurations and the observables
of every trajectory (one accumulator bin per chain).

Imported by the benchmark scripts of this folder (run as ``python benchmarks/NAME.py``, which
puts the folder on the path)."""
from __future__ import annotations

import torch

from rgdist.lattice import HMC, Phi4Action
from rgdist.measure import ObservableAccumulator


def fa_hmc(lat, m2: float, lam: float, seed: int, n_traj: int, chains: int, *, keep: int = 5,
           therm: int = 100):
    """(configurations kept every ``keep`` trajectories, stacked; the accumulator's estimate)
    of ``chains`` FA-HMC chains (step 0.2, 5 leapfrog steps, FA mass 0.1) at (m2, lam)."""
    h = HMC(Phi4Action(m2, lam), lat, chains, step_size=0.2, n_steps=5, fourier_accel=True,
            fa_mass2=0.1, generator=torch.Generator().manual_seed(seed))
    h.thermalize(therm)
    acc, kept = ObservableAccumulator(lat, chains), []
    for k in range(n_traj):
        h.trajectory()
        acc.update(h.phi, torch.arange(chains))
        if k % keep == 0:
            kept.append(h.phi.clone())
    return torch.cat(kept), acc.estimate()
