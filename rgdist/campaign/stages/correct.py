"""Stage 4 (optional, ``correct.method != off``): exact correction of the learned sampler.

On the point's root rank alone (the other ranks wait at the stage's closing checkpoint):
``correct.n_proposals`` draws of the probability-flow sampler with their log-density, chunk
``c`` from the stream ``("exact", "proposal", c)`` (probes: ``("exact", "probe")``); then
self-normalized reweighting and/or independence MH replaying the same proposals
(accept/reject and hybrid HMC from ``("exact", "mh")``). The stream labels keep the stage's
layout-1 name "exact" so results stay bit for bit those of earlier versions. The stage keeps no
intermediate state: a resume restarts it from its beginning, which gives the same numbers
since it is deterministic. Cost: n_proposals sampler draws (each 2 n_steps score
evaluations plus the likelihood's vector-Jacobian products); MH replays those draws (plus,
in the hybrid, HMC and one log q per moved state and step), reweighting reuses them.
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist import faults
from rgdist.campaign.stages.base import Stage, StageEnv

#: observables stored (as [value, err]) for the reweighted and the MH ensembles
CORRECT_OBSERVABLES = ("abs_m", "m2", "chi", "binder", "xi2")
#: group of the correction's results in a point of the results file
GROUP = "correct"


class CorrectStage(Stage):
    name = "correct"
    UNITS = "correct/"

    def __init__(self, correct, env: StageEnv, *, model, scheme, G, carry: dict, grid: str,
                 t_min: float, n_bins: int, hmc_params: dict | None):
        super().__init__(env)
        self.spec, self.model, self.scheme, self.G = correct, model, scheme, G
        self.carry, self.grid, self.t_min, self.n_bins = carry, grid, t_min, int(n_bins)
        self.hmc_params = hmc_params
        self.out: dict = {}

    @property
    def total(self) -> int:
        return 1

    def advance(self) -> None:
        if self.env.comm.is_root:
            self.out = self._correct()
        self.step = 1

    def results(self) -> dict:
        results = {k: v for k, v in self.carry.items() if k.startswith("results/")}
        results.update({f"results/{GROUP}/{k}": v for k, v in self.out.items()})
        return results

    def _correct(self) -> dict:
        from rgdist.correct import (FlowProposal, IndependenceMH, ReplayProposal, WeightedAccumulator,
                                    defensive_mixture, ess_fraction, log_weights, pareto_k)

        e, env, lattice = self.spec, self.env, self.env.lattice
        # float64 copy of the EMA model: log q is then the density of the float64 sampler run
        model = self.model.to(dtype=torch.float64)
        for p in model.parameters():
            p.requires_grad_(False)
        G = self.G.cpu()
        kw = dict(n_steps=e.n_steps, method=e.likelihood, grid=self.grid, t_min=self.t_min,
                  prior_G=G, n_probes=e.n_probes, integrator=e.integrator)
        flow = FlowProposal(model, self.scheme, batch_size=e.batch_size, dtype=env.dtype,
                            probe_generator=env.streams("exact", "probe"), **kw)
        source = flow if e.defensive == 0 else defensive_mixture(flow, lattice, G, e.defensive)
        n_chunks = -(-e.n_proposals // e.batch_size)
        phis, log_qs = [], []
        nfe = vjp = folds = n_defensive = 0
        for ci in range(n_chunks):
            n = min(e.batch_size, e.n_proposals - ci * e.batch_size)
            flow.n_nonpositive_det = 0  # a chunk may hold no flow draws (defensive mixture)
            phi, log_q = source.sample(n, env.streams("exact", "proposal", ci))
            phis.append(phi.detach())
            log_qs.append(log_q.detach())
            nfe, vjp, folds = flow.nfe, flow.vjp, folds + flow.n_nonpositive_det
            if source is not flow:
                n_defensive += int((source.last_labels == 1).sum())
            faults.maybe_kill("correct_chunk")
            env.report(progress=0.5 * (ci + 1) / n_chunks)
        phi, log_q = torch.cat(phis), torch.cat(log_qs)
        if not bool(torch.isfinite(phi).all()):
            raise FloatingPointError("the probability-flow sampler produced non-finite fields in the "
                                     "correction stage; use more correct.n_steps or a longer training")
        log_w = log_weights(phi, log_q, env.action)
        if not bool((log_w > -torch.inf).any()):
            raise FloatingPointError("every correction-stage proposal has weight 0 (non-finite S + log q)")
        out = {"ess_fraction": np.asarray(ess_fraction(log_w), dtype=np.float64),
               "pareto_k": np.asarray(pareto_k(log_w), dtype=np.float64),
               "n_proposals": np.asarray(e.n_proposals, dtype=np.int64),
               "nfe": np.asarray(nfe, dtype=np.int64),
               "vjp": np.asarray(vjp, dtype=np.int64),
               "n_nonpositive_det": np.asarray(folds, dtype=np.int64)}
        if e.defensive:
            out["defensive"] = np.asarray(e.defensive, dtype=np.float64)
            out["n_defensive"] = np.asarray(n_defensive, dtype=np.int64)

        def pairs(sub, est):
            return {f"{sub}/{name}": np.array([est[name][0], est[name][1]], dtype=np.float64)
                    for name in CORRECT_OBSERVABLES}

        if e.method in ("reweight", "both"):
            n_bins = min(self.n_bins, e.n_proposals)
            acc = WeightedAccumulator(lattice, n_bins)
            acc.update(phi, log_w, torch.arange(e.n_proposals) % n_bins)
            out.update(pairs("reweight", acc.estimate()))
        if e.method in ("mh", "both"):
            proposal = ReplayProposal(phi, log_q, source if e.hmc_trajectories else None)
            chain = IndependenceMH(proposal, env.action, lattice, e.mh_chains,
                                   generator=env.streams("exact", "mh"), hmc_trajectories=e.hmc_trajectories,
                                   hmc_params=self.hmc_params if e.hmc_trajectories else None)
            steps = e.mh_steps
            burn = steps // 10
            n_bins = max(2, min(self.n_bins, e.mh_chains))
            res = chain.run(steps - burn, burn_in=burn, n_bins=n_bins,
                            callback=lambda d: env.report(progress=0.5 + 0.5 * d["step"] / (steps - burn)))
            out["acceptance"] = np.asarray(res.acceptance, dtype=np.float64)
            out["mh_steps"] = np.asarray(steps - burn, dtype=np.int64)
            out["mh_burn_in"] = np.asarray(burn, dtype=np.int64)
            for name, (tau, dtau, _w) in res.tau_int.items():
                out[f"mh_tau_int/{name}"] = np.array([tau, dtau], dtype=np.float64)
                out[f"mh_ess/{name}"] = np.asarray(res.ess[name], dtype=np.float64)
            if res.hmc is not None:
                out["mh_hmc_acceptance"] = np.asarray(res.hmc["acceptance"], dtype=np.float64)
            out.update(pairs("mh", res.estimates))
        env.log(f"correction: ESS/n {float(out['ess_fraction']):.3f}"
                + (f", MH acceptance {float(out['acceptance']):.3f}" if "acceptance" in out else ""))
        return out
