"""Stage 3: sampling the trained model, with its observables and RG flows.

Chunks of ``sample.batch_size`` configurations; chunk ``c`` draws its prior and all solver
noise from the stream ``("sample", c)`` through :func:`rgdist.sample.ensemble.draw_chunk`.
The chunks are dealt round-robin over the point's ranks, one chunk per rank and step; each
keeps its own accumulators (observables at t = 0 and, with ``measure.record_times``, along
the flow). At the end the accumulators are combined in chunk order after an allgather, so the
merge is the same floating-point sum whatever the rank count. The hand-over is the point's
results (HMC and diffusion accumulators, training history, spectrum, diagnostics, flows).
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist import faults
from rgdist.campaign.stages.base import Stage, StageEnv, prefixed, strip
from rgdist.campaign.stages.flows import flow_results
from rgdist.measure import ObservableAccumulator


class SampleStage(Stage):
    name = "sample"
    UNITS = "sample/"

    def __init__(self, sample, env: StageEnv, *, model, scheme, G, carry: dict, n_bins: int,
                 record_times, t_min: float, weighting: str, diagnostics: dict, nonfinite=None,
                 zero_mode_weight: float = 1.0):
        super().__init__(env)
        from rgdist.flow.learned import merged_grid

        self.spec, self.model, self.scheme = sample, model, scheme
        self.carry, self.n_bins, self.weighting = carry, int(n_bins), weighting
        self.zero_mode_weight = zero_mode_weight
        self.diagnostics, self.nonfinite = diagnostics, nonfinite
        self.t_flow = np.asarray(sorted(record_times), dtype=np.float64)
        if len(self.t_flow):  # the flow times are inserted into the solver grid
            times = merged_grid(scheme, self.t_flow, sample.n_steps, sample.grid, t_min)
        else:
            times = scheme.time_grid(sample.n_steps, kind=sample.grid, t_min=t_min)
        self.times = times.to(env.device)
        self.G = G.to(env.device)
        # without an IR regulator the zero mode is never noised: draw it from the data's
        self.pool = torch.as_tensor(carry["data/configs"]).mean(dim=env.lattice.dims)
        self.n_chunks = -(-sample.n_samples // sample.batch_size)
        self.mine = env.my_units(self.n_chunks)
        self.units: dict[int, dict] = {}
        self.todo: list[int] = list(self.mine)
        self.rounds = len(self.todo)
        mdtype = next(model.parameters()).dtype

        def score_fn(phi, t):
            with torch.no_grad():
                return model(phi.to(mdtype), t.to(mdtype)).to(phi.dtype)

        self.score_fn = score_fn

    # -- accumulators of one chunk ------------------------------------------------------
    def _new_unit(self) -> dict:
        from rgdist.flow.forward import FlowAccumulator

        u = {"acc": ObservableAccumulator(self.env.lattice, self.n_bins)}
        if len(self.t_flow):
            u["flow"] = FlowAccumulator(self.env.lattice, self.t_flow, self.n_bins)
        return u

    @staticmethod
    def _unit_arrays(u) -> dict:
        out = prefixed("acc", u["acc"].to_arrays())
        if "flow" in u:
            out.update(prefixed("flow", u["flow"].to_arrays()))
        return out

    def _unit_from(self, arrays) -> dict:
        from rgdist.flow.forward import FlowAccumulator

        u = {"acc": ObservableAccumulator.from_arrays(self.env.lattice, strip("acc", arrays))}
        if len(self.t_flow):
            u["flow"] = FlowAccumulator.from_arrays(self.env.lattice, strip("flow", arrays))
        return u

    # -- interface ----------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.rounds

    def progress(self) -> float:
        return len(self.units) / max(len(self.mine), 1)

    def restore(self, arrays, step) -> None:
        """Restore the finished chunks this rank owns under the current rank count; the
        rounds left are agreed over the point's ranks (the stage counts rounds from 0)."""
        for ci in self.mine:
            pre = f"sample/chunk{ci:06d}"
            if any(k.startswith(pre + "/") for k in arrays):
                self.units[ci] = self._unit_from(strip(pre, arrays))
        self.todo = [ci for ci in self.mine if ci not in self.units]
        self.rounds = int(self.env.comm.allreduce_max(np.array([len(self.todo)], dtype=np.int64))[0])
        self.step = 0

    def advance(self) -> None:
        s, env = self.spec, self.env
        if self.step < len(self.todo):
            from rgdist.sample.ensemble import draw_chunk

            ci = self.todo[self.step]
            n = min(s.batch_size, s.n_samples - ci * s.batch_size)
            phi0, records = draw_chunk(self.score_fn, self.scheme, n, env.streams("sample", ci), self.times,
                                       solver=s.solver, prior_G=self.G, zero_mode_pool=self.pool,
                                       record_times=self.t_flow if len(self.t_flow) else None,
                                       denoise=s.denoise, dtype=env.dtype, device=env.device)
            if not bool(torch.isfinite(phi0).all()):
                raise FloatingPointError(self.nonfinite(ci) if self.nonfinite else
                                         f"non-finite samples in chunk {ci}")
            u = self._new_unit()
            bins = torch.arange(ci * s.batch_size, ci * s.batch_size + n) % self.n_bins
            u["acc"].update(phi0.detach().cpu(), bins)
            if len(self.t_flow):
                keys = np.asarray(sorted(records), dtype=np.float64)
                for k, tk in enumerate(self.t_flow):
                    phi_k = records[float(keys[int(np.argmin(np.abs(keys - tk)))])]
                    u["flow"].update(k, phi_k.detach().cpu(), bins)
            self.units[ci] = u
            faults.maybe_kill("sample_chunk")
        self.step += 1
        env.report(progress=self.progress())

    def state(self) -> dict:
        return {k: v for ci, u in self.units.items()
                for k, v in prefixed(f"sample/chunk{ci:06d}", self._unit_arrays(u)).items()}

    def results(self) -> dict:
        """Combine the chunks in chunk order (identical float sums for any rank count)."""
        local = {f"{ci:06d}/{k}": v for ci, u in self.units.items() for k, v in self._unit_arrays(u).items()}
        merged: dict[str, np.ndarray] = {}
        for part in self.env.comm.allgather_arrays(local):
            merged.update(part)
        total = None
        for ci in range(self.n_chunks):
            u = self._unit_from(strip(f"{ci:06d}", merged))
            if total is None:
                total = u
            else:
                total["acc"].merge(u["acc"])
                if "flow" in u:
                    total["flow"].merge(u["flow"])
        base = self.carry
        hmc_acc = ObservableAccumulator.from_arrays(self.env.lattice, strip("acc_hmc", base))
        out = {**prefixed("results/acc_hmc", hmc_acc.to_arrays()),
               **prefixed("results/acc_diffusion", total["acc"].to_arrays()),
               "results/train/loss": base["results/train/loss"],
               "results/train/steps": base["results/train/steps"],
               "results/hmc/acceptance": base["hmc/acceptance"],
               "results/spectrum": self.G.cpu().numpy(), **prefixed("results", self.diagnostics),
               **{k: v for k, v in base.items() if k.startswith("results/series/")}}
        if len(self.t_flow):
            out.update(prefixed("results", flow_results(
                self.env, self.scheme, self.model, self.G, self.t_flow, total["flow"], base,
                n_bins=self.n_bins, weighting=self.weighting,
                zero_mode_weight=self.zero_mode_weight)))
        return out
