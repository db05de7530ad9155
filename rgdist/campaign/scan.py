"""``sample.couplings`` with ``model.scope: grid``: the shared model sampled and corrected at
couplings that need not be grid points (phase 4 of rgdist.campaign.gridscope).

Unit u = (lattice size, coupling) in (grid size order, sorted couplings); units are dealt
round-robin over all ranks and each is computed by one rank alone: ``correct.n_proposals``
draws of the probability-flow sampler of the bound model (``correct.n_steps``,
``correct.likelihood``, ``correct.integrator``, ``sample.grid``) with their log-density, chunk
c from the stream ``(seed, "scan", N, "m2,lam", "proposal", c)`` (keyed by the coupling's
value, so adding a coupling changes no other), then self-normalized reweighting with
log w = -S - log q. Results (rank 0, written into results.h5 under ``scan/N<size>/``):
``couplings`` (K, 2), ``ess_fraction`` and ``pareto_k`` (K,), and per observable of
rgdist.campaign.stages.correct.CORRECT_OBSERVABLES ``reweight/<name>`` and ``raw/<name>`` (the
uncorrected proposals), each (K, 2) = [value, jackknife error]. The scan keeps no
intermediate state: a resume recomputes it (it is deterministic).
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist import faults
from rgdist.campaign import build
from rgdist.campaign.grid import shape_tag
from rgdist.campaign.stages.correct import CORRECT_OBSERVABLES
from rgdist.lattice import Lattice, Phi4Action
from rgdist.seeding import torch_generator

__all__ = ["run_scan"]


def _unit(campaign, shape, m2: float, lam: float, shared, device, log) -> dict:
    from rgdist.correct import FlowProposal, WeightedAccumulator, ess_fraction, log_weights, pareto_k

    c, e = campaign, campaign.correct
    lat = Lattice(tuple(shape))
    action = Phi4Action(m2, lam, lat.d)
    scheme = build.scheme_for(c.scheme, lat)
    model, G = shared.model_for(c, lat, scheme, m2, lam, device,
                                allow_outside=c.sample.allow_outside)
    model = model.to(dtype=torch.float64)
    for p in model.parameters():
        p.requires_grad_(False)
    key = ("scan", shape_tag(shape), f"{m2!r},{lam!r}")
    seed = int(c.seed)
    flow = FlowProposal(model, scheme, batch_size=e.batch_size, dtype=torch.float64,
                        probe_generator=torch_generator(seed, *key, "probe", device=device),
                        n_steps=e.n_steps, method=e.likelihood, grid=c.sample.grid,
                        t_min=c.scheme.t_min, prior_G=G.cpu(), n_probes=e.n_probes,
                        integrator=e.integrator)
    phis, log_qs = [], []
    for ci in range(-(-e.n_proposals // e.batch_size)):
        n = min(e.batch_size, e.n_proposals - ci * e.batch_size)
        phi, log_q = flow.sample(n, torch_generator(seed, *key, "proposal", ci, device=device))
        phis.append(phi.detach())
        log_qs.append(log_q.detach())
        faults.maybe_kill("scan_chunk")
    phi, log_q = torch.cat(phis), torch.cat(log_qs)
    log_w = log_weights(phi, log_q, action)
    n_bins = min(c.measure.n_bins, e.n_proposals)
    bins = torch.arange(e.n_proposals) % n_bins
    rw = WeightedAccumulator(lat, n_bins).update(phi, log_w, bins).estimate()
    raw = WeightedAccumulator(lat, n_bins).update(phi, torch.zeros_like(log_w), bins).estimate()
    out = {"ess_fraction": np.asarray([ess_fraction(log_w)], dtype=np.float64),
           "pareto_k": np.asarray([pareto_k(log_w)], dtype=np.float64)}
    for name in CORRECT_OBSERVABLES:
        out[f"reweight/{name}"] = np.array([rw[name]], dtype=np.float64)
        out[f"raw/{name}"] = np.array([raw[name]], dtype=np.float64)
    log(f"[scan {shape_tag(shape)} m2={m2:g} lam={lam:g}] ESS/n {float(out['ess_fraction'][0]):.3f}"
        f", reweighted chi {rw['chi'][0]:.4g} +- {rw['chi'][1]:.2g}")
    return out


def run_scan(campaign, shapes, shared: dict, comm, device, log) -> dict:
    """Phase 4 (collective over ``comm``): {results.h5 path: array} on rank 0, {} elsewhere.
    ``shared``: {shape: SharedModel}."""

    couplings = campaign.sample.couplings
    if not couplings:
        return {}
    units = [(shape, m2, lam) for shape in shapes for m2, lam in couplings]
    local = {}
    for u in range(comm.rank, len(units), comm.size):
        shape, m2, lam = units[u]
        for k, v in _unit(campaign, shape, m2, lam, shared[shape], device, log).items():
            local[f"{u:06d}/{k}"] = v
    merged = {}
    for part in comm.allgather_arrays(local):
        merged.update(part)
    if not comm.is_root:
        return {}
    out = {}
    K = len(couplings)
    for s, shape in enumerate(shapes):
        pre = f"scan/{shape_tag(shape)}"
        out[f"{pre}/couplings"] = np.asarray(couplings, dtype=np.float64).reshape(K, 2)
        names = [k.split("/", 1)[1] for k in merged if k.startswith(f"{s * K:06d}/")]
        for name in names:
            out[f"{pre}/{name}"] = np.concatenate([merged[f"{s * K + k:06d}/{name}"]
                                                   for k in range(K)])
    return out
