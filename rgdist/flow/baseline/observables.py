"""Observables along the baseline CNF's own flow time.

The ensemble phi(tau_k) is recorded at times tau_k = i_k / n_steps of the RK4 grid and
accumulated with rgdist.flow.base.FlowAccumulator into a FlowResult of kind "baseline" whose
time axis ``t`` IS tau in [0, 1], not a scheme time.

Direction: tau = 0 is the Gaussian prior and tau = 1 the model of the target -- the reverse
of an RG scheme's t, which runs from the data (t = 0) to the prior (t = T). To put both on one
axis use the fraction of the flow: 1 - tau against t / T (target end: tau = 1 <-> t/T = 0,
prior end: tau = 0 <-> t/T = 1).
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist.correct import WeightedAccumulator, ess_fraction, pareto_k
from rgdist.flow.base import FlowAccumulator, FlowResult
from rgdist.flow.baseline.checks import check_pos_int
from rgdist.flow.baseline.cnf import BaselineCNF
from rgdist.lattice import Phi4Action

__all__ = ["tau_grid_steps", "accumulate_baseline_flow", "baseline_flow"]


def tau_grid_steps(tau_grid, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted tau grid and the RK4 step index i (tau = i / n_steps) of each time; every
    tau must be a distinct multiple of 1/n_steps in [0, 1]."""
    t = np.sort(np.asarray(tau_grid, dtype=np.float64).reshape(-1))
    if t.size < 1 or not np.all(np.isfinite(t)) or t[0] < 0 or t[-1] > 1 + 1e-12:
        raise ValueError(f"tau_grid must be non-empty times in [0, 1], got {t.tolist()}")
    idx = np.rint(t * n_steps).astype(np.int64)
    if np.any(np.abs(idx - t * n_steps) > 1e-9 * n_steps) or np.any(np.diff(idx) <= 0):
        raise ValueError(f"every tau must be a distinct multiple of 1/n_steps = 1/{n_steps}, "
                         f"got {t.tolist()}")
    return idx / n_steps, idx


@torch.no_grad()
def accumulate_baseline_flow(cnf: BaselineCNF, n_samples: int, *, generator: torch.Generator,
                             tau_grid, n_bins: int = 32, batch_size: int = 256,
                             n_steps: int | None = None, action: Phi4Action | None = None,
                             accumulator: FlowAccumulator | None = None,
                             reweighted: WeightedAccumulator | None = None, callback=None):
    """Draw ``n_samples`` through the CNF in chunks of ``batch_size`` (one generator, in
    order) and record the ensemble at every tau_k.

    Returns ``(acc, log_q, log_w)``: ``acc`` a FlowAccumulator on the tau grid (draw i goes to
    bin i % n_bins), log_q of shape (n,) and, with ``action``, log_w = -S - log q of shape (n,)
    (float64 numpy; None without ``action``). ``reweighted`` (needs ``action``; its n_bins
    those of ``acc``): a rgdist.correct.WeightedAccumulator that also receives every tau = 1
    draw with its log-weight, in the same bins, for the self-normalized reweighted
    observables. ``callback(done)`` is called after every chunk with the draws done so far."""
    n_samples = check_pos_int("n_samples", n_samples)
    batch_size = check_pos_int("batch_size", batch_size)
    n = cnf.n_steps if n_steps is None else check_pos_int("n_steps", n_steps)
    tau, idx = tau_grid_steps(tau_grid, n)
    acc = FlowAccumulator(cnf.lattice, tau, n_bins) if accumulator is None else accumulator
    if not np.array_equal(acc.t, tau):
        raise ValueError("accumulator must have the same tau grid")
    if reweighted is not None and (action is None or not isinstance(reweighted, WeightedAccumulator)
                                   or reweighted.n_bins != acc.n_bins):
        raise ValueError("reweighted must be a WeightedAccumulator with the accumulator's n_bins "
                         "and needs action")
    slot = {int(i): k for k, i in enumerate(idx)}
    log_q, log_w = [], []
    done = 0
    while done < n_samples:
        b = min(batch_size, n_samples - done)
        bins = torch.arange(done, done + b) % acc.n_bins

        def record(i, phi, bins=bins):
            if i in slot:
                acc.update(slot[i], phi, bins.to(phi.device))

        phi, lq = cnf.sample(b, generator, n_steps=n, callback=record)
        log_q.append(lq.cpu().numpy())
        if action is not None:
            lw = cnf.log_weights(phi, lq, action)
            log_w.append(lw.cpu().numpy())
            if reweighted is not None:
                reweighted.update(phi, lw, bins.to(phi.device))
        done += b
        if callback is not None:
            callback(done)
    return acc, np.concatenate(log_q), (np.concatenate(log_w) if action is not None else None)


def baseline_flow(cnf: BaselineCNF, n_samples: int, *, generator: torch.Generator, tau_grid,
                  n_bins: int = 32, batch_size: int = 256, n_steps: int | None = None,
                  action: Phi4Action | None = None, observables=None, L_phys=None
                  ) -> FlowResult:
    """Observables along tau (module docstring): a FlowResult of kind "baseline".

    ``meta``: time axis "tau", n, n_steps, nfe_per_sample (4 n_steps evaluations of v and
    div v), m0_sq and, with ``action``, the importance diagnostics of the tau = 1 draws
    (ess_fraction, pareto_k).
    """
    n = cnf.n_steps if n_steps is None else check_pos_int("n_steps", n_steps)
    acc, _, lw = accumulate_baseline_flow(cnf, n_samples, generator=generator, tau_grid=tau_grid,
                                          n_bins=n_bins, batch_size=batch_size, n_steps=n,
                                          action=action)
    meta = {"time": "tau", "n": int(n_samples), "n_steps": n, "nfe_per_sample": 4 * n,
            "m0_sq": cnf.m0_sq}
    if lw is not None:
        meta["ess_fraction"] = ess_fraction(torch.from_numpy(lw))
        meta["pareto_k"] = pareto_k(torch.from_numpy(lw))
    return acc.result(observables, L_phys, kind="baseline", meta=meta)
