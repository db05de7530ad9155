"""One grid point's pipeline: HMC data -> train -> sample -> measure, resumable per step.

The work of a point is split into *units* that own their random streams, so the result does
not depend on how many ranks share the point:

* HMC: ``n_blocks`` blocks of ``chains_per_block`` chains; block ``b`` draws from the stream
  ``(seed, point, "hmc", b)``. The blocks of a point are dealt round-robin over the ranks of
  the point's communicator and advance in lockstep, one trajectory per step.
* training: every rank of the point trains the same model from the same stream (redundant,
  so no reduction can change the numbers); the point's root writes the trainer state.
* sampling: chunks of ``sample.batch_size`` configurations; chunk ``c`` draws from
  ``(seed, point, "sample", c)``; chunks are dealt round-robin and each keeps its own
  accumulator. Accumulators are combined in chunk order after an allgather, so the merge is
  the same floating-point sum whatever the rank count.
* exact correction (only with ``exact.method != off``): on the point's root rank alone (the
  other ranks wait at the stage's closing checkpoint), ``exact.n_proposals`` draws of the
  probability-flow sampler with their log-density, chunk ``c`` from ``(seed, point,
  "exact", "proposal", c)``; then self-normalized reweighting and/or independence MH
  replaying the same proposals (accept/reject and hybrid HMC from ``(..., "exact", "mh")``).
  The stage keeps no intermediate state: a resume restarts it from its beginning, which
  gives the same numbers since it is deterministic.

A checkpoint is taken every ``checkpoint.every_steps`` steps or ``every_seconds`` seconds
(whichever first; the decision is agreed over the point's ranks) and at every stage change.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rgdist import faults
from rgdist.lattice import Lattice, Phi4Action
from rgdist.lattice.hmc import HMC
from rgdist.measure import ObservableAccumulator
from rgdist.seeding import torch_generator

STAGES = ("hmc", "train", "sample", "exact", "done")
# observables stored (as [value, err]) for the reweighted and the MH ensembles
EXACT_OBSERVABLES = ("abs_m", "m2", "chi", "binder", "xi2")
_RANK_PREFIX = re.compile(r"^rank\d+/")


class Preempted(Exception):
    """Raised inside a point when a pre-emption signal was agreed on; state is saved."""


def _prefixed(prefix: str, d: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in d.items()}


def _strip(prefix: str, d: dict) -> dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in d.items() if k.startswith(prefix + "/")}


@dataclass
class PointContext:
    """What a point's pipeline needs from the runner."""

    campaign: object  # rgdist.campaign.spec.Campaign
    point: object  # rgdist.campaign.spec.GridPoint
    comm: object  # rgdist.parallel.comm.Comm of the ranks sharing this point
    store: object  # rgdist.io.checkpoint.CheckpointStore of this point
    device: torch.device
    preempt: object  # has .requested
    report: object = None  # callable(dict) for status/progress, or None
    log: object = None  # callable(str)
    timings: dict = field(default_factory=dict)


class PointJob:
    """Runs (or resumes) one grid point to the 'done' stage and returns its results."""

    def __init__(self, ctx: PointContext):
        self.ctx = ctx
        c = ctx.campaign
        p = ctx.point
        self.lattice = Lattice(tuple(p.shape))
        self.action = Phi4Action(p.m2, p.lam, self.lattice.d)
        self.seed = int(c.seed)
        self.key = int(p.seed_key)  # stable: does not depend on the point's place in the grid
        self.dtype = torch.float64
        self.stage = "hmc"
        self.step = 0
        self.arrays: dict[str, np.ndarray] = {}  # shared state carried between stages
        self._tag = 0
        self._last_ckpt = time.monotonic()

    # ------------------------------------------------------------------ helpers
    def gen(self, *path) -> torch.Generator:
        return torch_generator(self.seed, self.key, *path, device=self.ctx.device)

    def _log(self, msg: str) -> None:
        if self.ctx.log is not None:
            self.ctx.log(f"[point {self.ctx.point.point_id}] {msg}")

    def _report(self, **kw) -> None:
        if self.ctx.report is not None and self.ctx.comm.is_root:
            self.ctx.report({"stage": self.stage, "step": self.step, **kw})

    def _due(self, force: bool = False) -> tuple[bool, bool]:
        """(checkpoint now?, pre-empted?) agreed over the point's ranks."""
        ck = self.ctx.campaign.checkpoint
        local_pre = bool(self.ctx.preempt.requested)
        by_steps = ck.every_steps > 0 and self.step > 0 and self.step % ck.every_steps == 0
        by_time = ck.every_seconds is not None and time.monotonic() - self._last_ckpt >= ck.every_seconds
        flags = np.array([local_pre, by_time], dtype=np.int32)
        flags = self.ctx.comm.allreduce_max(flags)
        pre = bool(flags[0])
        return (force or pre or by_steps or bool(flags[1])), pre

    def checkpoint(self, local_arrays, *, force: bool = False) -> None:
        """Collective: save when due; raise Preempted after saving if a signal arrived.

        ``local_arrays``: this rank's arrays, or a callable returning them (evaluated only
        when a checkpoint is due, so building the state costs nothing on other steps)."""
        due, pre = self._due(force)
        if not due:
            return
        if callable(local_arrays):
            local_arrays = local_arrays()
        r = self.ctx.comm.rank
        arrays = {f"rank{r}/{k}": v for k, v in local_arrays.items()}
        if self.ctx.comm.is_root:
            arrays.update(self.arrays)
        self._tag += 1
        attrs = {"stage": self.stage, "step": int(self.step), "point_id": self.ctx.point.point_id}
        t0 = time.perf_counter()
        self.ctx.store.save(self._tag, arrays, attrs)
        tm = self.ctx.timings
        tm["checkpoint_s"] = tm.get("checkpoint_s", 0.0) + time.perf_counter() - t0
        tm["checkpoints"] = tm.get("checkpoints", 0) + 1
        tm["checkpoint_bytes"] = tm.get("checkpoint_bytes", 0) + sum(
            np.asarray(v).nbytes for v in arrays.values())
        self._last_ckpt = time.monotonic()
        self._report(checkpoint=self._tag)
        if pre:
            raise Preempted(self.stage)

    def resume(self) -> bool:
        """Load the current checkpoint if there is one. Returns True when resumed."""
        got = self.ctx.store.load_latest(all_ranks=True)
        if got is None:
            return False
        tag, raw, attrs = got
        # per-rank arrays are keyed by work unit, so any rank count can take them over
        arrays = {(k.split("/", 1)[1] if _RANK_PREFIX.match(k) else k): v for k, v in raw.items()}
        self._tag = int(tag)
        self.stage = str(attrs["stage"])
        self.step = int(attrs["step"])
        self.arrays = arrays
        self._log(f"resumed from checkpoint {tag} at stage {self.stage}, step {self.step}")
        return True

    # ------------------------------------------------------------------ pipeline
    def run(self) -> dict:
        resumed = self.resume()
        if not resumed:
            self.stage, self.step = "hmc", 0
        while self.stage != "done":
            t0 = time.perf_counter()
            getattr(self, f"_stage_{self.stage}")()
            self.ctx.timings[self.stage] = self.ctx.timings.get(self.stage, 0.0) + time.perf_counter() - t0
        self._report(done=True)
        return _strip("results", self.arrays)

    def _advance(self, new_stage: str, keep: dict) -> None:
        self.stage, self.step = new_stage, 0
        self.arrays = keep
        self.checkpoint({}, force=True)

    # ---- stage 1: HMC data and the Monte Carlo reference --------------------------------
    def _my_units(self, n_units: int) -> list[int]:
        comm = self.ctx.comm
        return list(range(comm.rank, n_units, comm.size))

    def _stage_hmc(self) -> None:
        h = self.ctx.campaign.hmc
        n_blocks = -(-h.n_chains // h.chains_per_block)
        mine = self._my_units(n_blocks)
        blocks, kept = {}, {}
        for b in mine:
            n = min(h.chains_per_block, h.n_chains - b * h.chains_per_block)
            blocks[b] = HMC(self.action, self.lattice, n, step_size=h.step_size, n_steps=h.n_steps,
                            integrator=h.integrator, fourier_accel=h.fourier_accel,
                            fa_mass2=h.fa_mass2, target_accept=h.target_accept, jitter=h.jitter,
                            generator=self.gen("hmc", b), device=self.ctx.device, dtype=self.dtype)
            kept[b] = []
        total = h.therm + h.n_traj
        if self.step > 0:  # restore the blocks' states and kept fields from the checkpoint
            for b in mine:
                pre = f"hmc/block{b:05d}"
                blocks[b].load_state_dict(_strip(pre + "/state", self.arrays))
                k = self.arrays[pre + "/kept"]
                kept[b] = [torch.as_tensor(x, device=self.ctx.device) for x in k]
        self.arrays = {k: v for k, v in self.arrays.items() if not k.startswith("hmc/block")}

        def local_state():
            out = {}
            for b in mine:
                pre = f"hmc/block{b:05d}"
                out.update(_prefixed(pre + "/state", blocks[b].state_dict()))
                k = torch.stack(kept[b]) if kept[b] else torch.zeros((0, blocks[b].n_chains, *self.lattice.shape), dtype=self.dtype)
                out[pre + "/kept"] = k.cpu().numpy()
            return out

        while self.step < total:
            for b in mine:
                if self.step < h.therm:
                    blocks[b].thermalize(1, adapt=True)
                else:
                    blocks[b].trajectory()
                    if (self.step - h.therm + 1) % h.thin == 0:
                        kept[b].append(blocks[b].phi.clone())
            self.step += 1
            faults.maybe_kill("hmc_traj")
            if self.step % 10 == 0 or self.step == total:
                self._report(progress=self.step / total)
            if self.step < total:
                self.checkpoint(local_state)

        # gather every block's kept fields on every rank, in block order
        comm = self.ctx.comm
        mine_arrays = {f"{b:05d}": (torch.stack(kept[b]) if kept[b] else torch.zeros((0, blocks[b].n_chains, *self.lattice.shape), dtype=self.dtype)).cpu().numpy() for b in mine}
        stats = {f"{b:05d}": np.array([blocks[b].stats()["acceptance"], blocks[b].step_size,
                                       blocks[b].n_steps], dtype=np.float64) for b in mine}
        parts = comm.allgather_arrays({**_prefixed("kept", mine_arrays), **_prefixed("stats", stats)})
        merged: dict[str, np.ndarray] = {}
        for part in parts:
            merged.update(part)
        kept_all = [merged[f"kept/{b:05d}"] for b in range(n_blocks)]  # (n_kept, chains_b, *shape)
        # configurations ordered (block, chain, time): chain c = global chain index
        configs = np.concatenate([np.swapaxes(k, 0, 1) for k in kept_all], axis=0)  # (chains, n_kept, ...)
        n_chains, n_kept = configs.shape[0], configs.shape[1]
        data = configs.reshape((n_chains * n_kept, *self.lattice.shape))
        acc = ObservableAccumulator(self.lattice, self.ctx.campaign.measure.n_bins)
        chain_of = np.repeat(np.arange(n_chains), n_kept)
        acc.update(torch.as_tensor(data), torch.as_tensor(chain_of % acc.n_bins))
        st = np.stack([merged[f"stats/{b:05d}"] for b in range(n_blocks)])
        keep = {"data/configs": data,
                "data/chain": chain_of.astype(np.int64),
                "hmc/acceptance": st[:, 0].copy(), "hmc/step_size": st[:, 1].copy(),
                "hmc/n_steps": st[:, 2].astype(np.int64),
                **_prefixed("acc_hmc", acc.to_arrays())}
        self._log(f"HMC done: {data.shape[0]} configurations, acceptance {st[:, 0].mean():.3f}")
        self._advance("train", keep)

    # ---- stage 2: training -------------------------------------------------------------
    def _build_model(self):
        from rgdist.models import build_model
        from rgdist.rg import build_scheme
        from rgdist.train.data import measured_spectrum

        c = self.ctx.campaign
        scheme = build_scheme(c.scheme.name, self.lattice, **c.scheme.params)
        data = torch.as_tensor(self.arrays["data/configs"])
        G = measured_spectrum(data, self.lattice)
        mdtype = torch.float64 if c.model.dtype == "float64" else torch.float32
        model = build_model(c.model.name, self.lattice, scheme=scheme,
                            data_spectrum=G if c.model.gaussian_exact else None,
                            gaussian_exact=c.model.gaussian_exact,
                            generator=self.gen("init"), **c.model.params)
        model = model.to(device=self.ctx.device, dtype=mdtype)
        return scheme, model, data, G

    def _trainer(self):
        from rgdist.train import EnsembleData, TrainConfig, Trainer

        scheme, model, data, G = self._build_model()
        cfg = TrainConfig(**self.ctx.campaign.train.as_kwargs(), t_min=self.ctx.campaign.scheme.t_min)
        source = EnsembleData(data.to(self.ctx.device), augment=True)
        # reverse KL: the flow's prior is the one the exact stage samples (prior_G = G)
        trainer = Trainer(model, scheme, source, cfg, generator=self.gen("train"),
                          action=self.action, prior_G=G.to(self.ctx.device))
        return trainer, scheme, G

    def _diagnostics(self, scheme, G, check: bool = True) -> dict:
        """Leftover, dynamic range and sampler bias on the measured spectrum G (ConfigError,
        exit 2, when one exceeds its limit; see rgdist.campaign.diagnostics)."""
        from rgdist.campaign.diagnostics import point_diagnostics, point_where

        return point_diagnostics(self.ctx.campaign, scheme, G, point_where(self.ctx.point), check=check)

    def _stage_train(self) -> None:
        trainer, scheme, G = self._trainer()
        d = self._diagnostics(scheme, G)  # before any training: a bad scheme stops here
        self._log(f"leftover A_T^2 G/Sigma_T max {float(d['leftover/max']):.3g} mean "
                  f"{float(d['leftover/mean']):.3g}, prior dynamic range "
                  f"{float(d['leftover/dynamic_range']):.3g}, sampler G2 bias "
                  f"{float(d['sampler_bias/max_discretization']):.3g}")
        if self.step > 0:
            trainer.load_state_dict(_strip("trainer", self.arrays))
        base = {k: v for k, v in self.arrays.items() if not k.startswith("trainer/")}
        self.arrays = base
        steps = trainer.config.steps
        while self.step < steps:
            loss = trainer.train_step()  # None after a NaN rollback (the step is then redone)
            self.step = int(trainer.step)
            faults.maybe_kill("train_step")
            if loss is not None and (self.step % 20 == 0 or self.step == steps):
                self._report(progress=self.step / steps, loss=float(loss))
            if self.ctx.comm.any_true(trainer.out_of_time()):
                self._log(f"training stopped by its time budget at step {self.step}")
                break
            if self.step < steps:
                self.checkpoint(lambda: _prefixed("trainer", trainer.state_dict()) if self.ctx.comm.is_root else {})
        state = trainer.state_dict()
        keep = {**base, **_prefixed("trainer", state),
                "results/train/loss": np.asarray(trainer.loss_history, dtype=np.float64),
                "results/train/steps": np.asarray(self.step, dtype=np.int64)}
        self._advance("sample", keep)

    # ---- stage 3: sampling and measurement ---------------------------------------------
    def _stage_sample(self) -> None:
        from rgdist.flow.forward import FlowAccumulator
        from rgdist.flow.learned import merged_grid
        from rgdist.sample.solvers import solve

        c = self.ctx.campaign
        s = c.sample
        trainer, scheme, G = self._trainer()
        diagnostics = _prefixed("results", self._diagnostics(scheme, G))
        trainer.load_state_dict(_strip("trainer", self.arrays))
        model = trainer.ema_model()
        model.eval()
        mdtype = next(model.parameters()).dtype

        def score_fn(phi, t):
            with torch.no_grad():
                return model(phi.to(mdtype), t.to(mdtype)).to(phi.dtype)

        n_chunks = -(-s.n_samples // s.batch_size)
        mine = self._my_units(n_chunks)
        t_flow = np.asarray(sorted(c.measure.record_times), dtype=np.float64)
        if len(t_flow):  # the flow times are inserted into the solver grid
            times = merged_grid(scheme, t_flow, s.n_steps, s.grid, c.scheme.t_min).to(self.ctx.device)
        else:
            times = scheme.time_grid(s.n_steps, kind=s.grid, t_min=c.scheme.t_min).to(self.ctx.device)
        G = G.to(self.ctx.device)
        # without an IR regulator the zero mode is never noised: draw it from the data's
        pool = torch.as_tensor(self.arrays["data/configs"]).mean(dim=self.lattice.dims)

        def new_unit():
            u = {"acc": ObservableAccumulator(self.lattice, c.measure.n_bins)}
            if len(t_flow):
                u["flow"] = FlowAccumulator(self.lattice, t_flow, c.measure.n_bins)
            return u

        def unit_arrays(u):
            out = _prefixed("acc", u["acc"].to_arrays())
            if "flow" in u:
                out.update(_prefixed("flow", u["flow"].to_arrays()))
            return out

        def unit_from(arrays):
            u = {"acc": ObservableAccumulator.from_arrays(self.lattice, _strip("acc", arrays))}
            if len(t_flow):
                u["flow"] = FlowAccumulator.from_arrays(self.lattice, _strip("flow", arrays))
            return u

        units = {}
        # restore the finished chunks this rank owns under the current rank count
        for ci in mine:
            pre = f"sample/chunk{ci:06d}"
            if any(k.startswith(pre + "/") for k in self.arrays):
                units[ci] = unit_from(_strip(pre, self.arrays))
        base = {k: v for k, v in self.arrays.items() if not k.startswith("sample/")}
        todo = [ci for ci in mine if ci not in units]
        all_rounds = int(self.ctx.comm.allreduce_max(np.array([len(todo)], dtype=np.int64))[0])
        self.step = 0
        snapshots = None
        for r in range(all_rounds):
            if r < len(todo):
                ci = todo[r]
                n = min(s.batch_size, s.n_samples - ci * s.batch_size)
                g = self.gen("sample", ci)
                phi_T = scheme.sample_prior(n, g, G=G, dtype=self.dtype, device=self.ctx.device,
                                            zero_mode_pool=pool)
                phi0, records = solve(score_fn, scheme, phi_T, times, solver=s.solver, generator=g,
                                      denoise=s.denoise, G=G,
                                      record_times=t_flow if len(t_flow) else None)
                if not bool(torch.isfinite(phi0).all()):
                    from rgdist.campaign.diagnostics import nonfinite_message

                    raise FloatingPointError(nonfinite_message(c, scheme, G, s.solver, ci))
                u = new_unit()
                bins = torch.arange(ci * s.batch_size, ci * s.batch_size + n) % c.measure.n_bins
                u["acc"].update(phi0.detach().cpu(), bins)
                if len(t_flow):
                    keys = np.asarray(sorted(records), dtype=np.float64)
                    for k, tk in enumerate(t_flow):
                        phi_k = records[float(keys[int(np.argmin(np.abs(keys - tk)))])]
                        u["flow"].update(k, phi_k.detach().cpu(), bins)
                units[ci] = u
                faults.maybe_kill("sample_chunk")
            self.step += 1
            self._report(progress=len(units) / max(len(mine), 1))
            self.arrays = base
            if r + 1 < all_rounds:
                self.checkpoint(lambda: {k: v for ci, u in units.items()
                                         for k, v in _prefixed(f"sample/chunk{ci:06d}", unit_arrays(u)).items()})
        # combine in chunk order (identical float sums for any rank count)
        local = {f"{ci:06d}/{k}": v for ci, u in units.items() for k, v in unit_arrays(u).items()}
        merged: dict[str, np.ndarray] = {}
        for part in self.ctx.comm.allgather_arrays(local):
            merged.update(part)
        total = None
        for ci in range(n_chunks):
            u = unit_from(_strip(f"{ci:06d}", merged))
            if total is None:
                total = u
            else:
                total["acc"].merge(u["acc"])
                if "flow" in u:
                    total["flow"].merge(u["flow"])
        hmc_acc = ObservableAccumulator.from_arrays(self.lattice, _strip("acc_hmc", base))
        results = {**_prefixed("results/acc_hmc", hmc_acc.to_arrays()),
                   **_prefixed("results/acc_diffusion", total["acc"].to_arrays()),
                   "results/train/loss": base["results/train/loss"],
                   "results/train/steps": base["results/train/steps"],
                   "results/hmc/acceptance": base["hmc/acceptance"],
                   "results/spectrum": G.cpu().numpy(), **diagnostics}
        if len(t_flow):
            results.update(self._flow_results(scheme, model, G, t_flow, total["flow"], base))
        if c.exact.enabled:  # the exact stage rebuilds the model from the data and trainer state
            carry = {k: v for k, v in base.items()
                     if k.startswith("trainer/") or k in ("data/configs", "hmc/step_size")}
            self._advance("exact", {**results, **carry})
        else:
            self._advance("done", results)

    def _flow_results(self, scheme, model, G, t_flow, learned_acc, base) -> dict:
        """Exact flow of the HMC ensemble, learned flow, Gaussian closed form, couplings."""
        from rgdist.flow.couplings import gaussian_couplings, learned_couplings
        from rgdist.flow.forward import accumulate_exact_flow, gaussian_flow
        from rgdist.flow.learned import compare_flows

        c = self.ctx.campaign
        data = torch.as_tensor(base["data/configs"])
        bins = torch.as_tensor(base["data/chain"]) % c.measure.n_bins
        # every rank computes the whole (cheap, network-free) exact flow in the same order
        exact_acc, snaps = accumulate_exact_flow(data, scheme, t_flow, n_bins=c.measure.n_bins, bins=bins,
                                                 generator=lambda k: self.gen("flow_exact", k),
                                                 batch_size=1024, n_keep=4)
        exact = exact_acc.result(kind="exact", snapshots=snaps)
        learned = learned_acc.result(kind="learned")
        gauss = gaussian_flow(self.lattice, scheme, G.cpu(), t_flow)
        out = {**_prefixed("results/flow/exact", exact.to_arrays()),
               **_prefixed("results/flow/learned", learned.to_arrays()),
               **_prefixed("results/flow/gaussian", gauss.to_arrays())}
        for name, dev in compare_flows(exact, learned).items():
            out[f"results/flow/deviation/{name}"] = np.asarray(dev, dtype=np.float64)
        gc = gaussian_couplings(self.lattice, scheme, G.cpu(), t_flow, weighting=c.train.weighting)
        out.update({f"results/flow/couplings/gaussian/{k}": np.asarray(v, dtype=np.float64) for k, v in gc.items()})
        if hasattr(_unwrap(model), "couplings"):
            lc = learned_couplings(_unwrap(model), t_flow, T=scheme.T)
            out.update({f"results/flow/couplings/learned/{k}": np.asarray(v, dtype=np.float64) for k, v in lc.items()})
        return out


    # ---- stage 4 (optional): exact correction of the learned sampler --------------------
    def _stage_exact(self) -> None:
        results = {k: v for k, v in self.arrays.items() if k.startswith("results/")}
        if self.ctx.comm.is_root:
            results.update(self._exact_results())
        self._advance("done", results)

    def _exact_results(self) -> dict:
        """Proposals with log q, then reweighting and/or independence MH (root rank only).

        Cost: n_proposals sampler draws (each 2 n_steps score evaluations plus the likelihood's
        vector-Jacobian products); MH replays those draws (plus, in the hybrid, HMC and one
        log q per moved state and step), reweighting reuses them.
        """
        from rgdist.correct import (FlowProposal, IndependenceMH, ReplayProposal, WeightedAccumulator,
                                  defensive_mixture, ess_fraction, log_weights, pareto_k)

        c = self.ctx.campaign
        e = c.exact
        trainer, scheme, G = self._trainer()
        trainer.load_state_dict(_strip("trainer", self.arrays))
        # float64 copy of the EMA model: log q is then the density of the float64 sampler run
        model = trainer.ema_model().to(dtype=torch.float64)
        for p in model.parameters():
            p.requires_grad_(False)
        kw = dict(n_steps=e.n_steps, method=e.likelihood, grid=c.sample.grid, t_min=c.scheme.t_min,
                  prior_G=G.cpu(), n_probes=e.n_probes, integrator=e.integrator)
        flow = FlowProposal(model, scheme, batch_size=e.batch_size, dtype=self.dtype,
                            probe_generator=self.gen("exact", "probe"), **kw)
        source = flow if e.defensive == 0 else defensive_mixture(flow, self.lattice, G.cpu(),
                                                                 e.defensive)
        n_chunks = -(-e.n_proposals // e.batch_size)
        phis, log_qs = [], []
        nfe = vjp = folds = n_defensive = 0
        for ci in range(n_chunks):
            n = min(e.batch_size, e.n_proposals - ci * e.batch_size)
            flow.n_nonpositive_det = 0  # a chunk may hold no flow draws (defensive mixture)
            phi, log_q = source.sample(n, self.gen("exact", "proposal", ci))
            phis.append(phi.detach())
            log_qs.append(log_q.detach())
            nfe, vjp, folds = flow.nfe, flow.vjp, folds + flow.n_nonpositive_det
            if source is not flow:
                n_defensive += int((source.last_labels == 1).sum())
            faults.maybe_kill("exact_chunk")
            self._report(progress=0.5 * (ci + 1) / n_chunks)
        phi, log_q = torch.cat(phis), torch.cat(log_qs)
        if not bool(torch.isfinite(phi).all()):
            raise FloatingPointError("the probability-flow sampler produced non-finite fields in the "
                                     "exact stage; use more exact.n_steps or a longer training")
        log_w = log_weights(phi, log_q, self.action)
        if not bool((log_w > -torch.inf).any()):
            raise FloatingPointError("every exact-stage proposal has weight 0 (non-finite S + log q)")
        pre = "results/exact"
        out = {f"{pre}/ess_fraction": np.asarray(ess_fraction(log_w), dtype=np.float64),
               f"{pre}/pareto_k": np.asarray(pareto_k(log_w), dtype=np.float64),
               f"{pre}/n_proposals": np.asarray(e.n_proposals, dtype=np.int64),
               f"{pre}/nfe": np.asarray(nfe, dtype=np.int64),
               f"{pre}/vjp": np.asarray(vjp, dtype=np.int64),
               f"{pre}/n_nonpositive_det": np.asarray(folds, dtype=np.int64)}
        if e.defensive:
            out[f"{pre}/defensive"] = np.asarray(e.defensive, dtype=np.float64)
            out[f"{pre}/n_defensive"] = np.asarray(n_defensive, dtype=np.int64)

        def pairs(sub, est):
            return {f"{pre}/{sub}/{name}": np.array([est[name][0], est[name][1]], dtype=np.float64)
                    for name in EXACT_OBSERVABLES}

        if e.method in ("reweight", "both"):
            n_bins = min(c.measure.n_bins, e.n_proposals)
            acc = WeightedAccumulator(self.lattice, n_bins)
            acc.update(phi, log_w, torch.arange(e.n_proposals) % n_bins)
            out.update(pairs("reweight", acc.estimate()))
        if e.method in ("mh", "both"):
            proposal = ReplayProposal(phi, log_q, source if e.hmc_trajectories else None)
            hmc_params = {"step_size": float(np.mean(self.arrays["hmc/step_size"])),
                          "n_steps": c.hmc.n_steps, "integrator": c.hmc.integrator,
                          "jitter": c.hmc.jitter,
                          "fourier_accel": c.hmc.fourier_accel, "fa_mass2": c.hmc.fa_mass2}
            chain = IndependenceMH(proposal, self.action, self.lattice, e.mh_chains,
                                   generator=self.gen("exact", "mh"), hmc_trajectories=e.hmc_trajectories,
                                   hmc_params=hmc_params if e.hmc_trajectories else None)
            steps = e.mh_steps
            burn = steps // 10
            n_bins = max(2, min(c.measure.n_bins, e.mh_chains))
            res = chain.run(steps - burn, burn_in=burn, n_bins=n_bins,
                            callback=lambda d: self._report(progress=0.5 + 0.5 * d["step"] / (steps - burn)))
            out[f"{pre}/acceptance"] = np.asarray(res.acceptance, dtype=np.float64)
            out[f"{pre}/mh_steps"] = np.asarray(steps - burn, dtype=np.int64)
            out[f"{pre}/mh_burn_in"] = np.asarray(burn, dtype=np.int64)
            for name, (tau, dtau, _w) in res.tau_int.items():
                out[f"{pre}/mh_tau_int/{name}"] = np.array([tau, dtau], dtype=np.float64)
                out[f"{pre}/mh_ess/{name}"] = np.asarray(res.ess[name], dtype=np.float64)
            if res.hmc is not None:
                out[f"{pre}/mh_hmc_acceptance"] = np.asarray(res.hmc["acceptance"], dtype=np.float64)
            out.update(pairs("mh", res.estimates))
        self._log(f"exact: ESS/n {float(out[pre + '/ess_fraction']):.3f}"
                  + (f", MH acceptance {float(out[pre + '/acceptance']):.3f}" if pre + "/acceptance" in out else ""))
        return out


def _unwrap(model):
    """The innermost score model (through Gaussian-exact and compile wrappers)."""
    for attr in ("net", "_orig_mod", "module"):
        inner = getattr(model, attr, None)
        if isinstance(inner, torch.nn.Module):
            return _unwrap(inner)
    return model
