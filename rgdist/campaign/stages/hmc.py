"""Stage 1: HMC data and the Monte Carlo reference.

``n_blocks`` blocks of ``hmc.chains_per_block`` chains; block ``b`` draws from the stream
``("hmc", b)``. The blocks are dealt round-robin over the point's ranks and advance in
lockstep, one trajectory (thermalization: one adaptive trajectory) per step. The hand-over:
every kept configuration ordered (chain, time) with its chain index, the blocks' acceptance,
adapted step size and step count, and the HMC observable accumulator (bin = chain % n_bins);
with ``series`` (campaign ``measure.series: true``) also the per-configuration series of
:func:`series_arrays` under ``results/series/`` (results datasets ``points/<id>/series/``).
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist import faults
from rgdist.campaign import build
from rgdist.campaign.stages.base import Stage, StageEnv, prefixed, strip
from rgdist.measure import ObservableAccumulator

#: the per-configuration series (results ``points/<id>/series/<name>``), in this order
SERIES_NAMES = ("phi2_sum", "m", "g2_p1", "chain")


def series_arrays(configs, chain) -> dict[str, np.ndarray]:
    """What reweighting in m2 needs of every kept configuration ``configs`` (n, *shape),
    ordered like ``chain`` (n,): rgdist.analysis.config_data (``phi2_sum``, ``m``, ``g2_p1``)
    and ``chain`` (int64, the jackknife bins)."""
    from rgdist.analysis.reweight_observables import config_data

    return {**config_data(configs), "chain": np.asarray(chain, dtype=np.int64)}


class HMCStage(Stage):
    name = "hmc"
    UNITS = "hmc/block"

    def __init__(self, hmc, env: StageEnv, *, n_bins: int, series: bool = False):
        super().__init__(env)
        self.spec, self.n_bins, self.series = hmc, int(n_bins), bool(series)
        self.n_blocks = -(-hmc.n_chains // hmc.chains_per_block)
        self.mine = env.my_units(self.n_blocks)
        self.blocks, self.kept = {}, {}
        for b in self.mine:
            n = min(hmc.chains_per_block, hmc.n_chains - b * hmc.chains_per_block)
            self.blocks[b] = build.hmc_sampler(hmc, env.action, env.lattice, n, env.streams("hmc", b),
                                               env.device, env.dtype)
            self.kept[b] = []

    @property
    def total(self) -> int:
        return self.spec.therm + self.spec.n_traj

    def restore(self, arrays, step) -> None:
        super().restore(arrays, step)
        if self.step > 0:
            for b in self.mine:
                pre = f"{self.UNITS}{b:05d}"
                self.blocks[b].load_state_dict(strip(pre + "/state", arrays))
                self.kept[b] = [torch.as_tensor(x, device=self.env.device) for x in arrays[pre + "/kept"]]

    def _kept(self, b) -> torch.Tensor:
        if self.kept[b]:
            return torch.stack(self.kept[b])
        return torch.zeros((0, self.blocks[b].n_chains, *self.env.lattice.shape), dtype=self.env.dtype)

    def advance(self) -> None:
        h = self.spec
        for b in self.mine:
            if self.step < h.therm:
                self.blocks[b].thermalize(1, adapt=True)
            else:
                self.blocks[b].trajectory()
                if (self.step - h.therm + 1) % h.thin == 0:
                    self.kept[b].append(self.blocks[b].phi.clone())
        self.step += 1
        faults.maybe_kill("hmc_traj")
        if self.step % 10 == 0 or self.step == self.total:
            self.env.report(progress=self.progress())

    def state(self) -> dict:
        out = {}
        for b in self.mine:
            pre = f"{self.UNITS}{b:05d}"
            out.update(prefixed(pre + "/state", self.blocks[b].state_dict()))
            out[pre + "/kept"] = self._kept(b).cpu().numpy()
        return out

    def results(self) -> dict:
        """Gather every block's kept fields on every rank, in block order."""
        env, lat = self.env, self.env.lattice
        mine_arrays = {f"{b:05d}": self._kept(b).cpu().numpy() for b in self.mine}
        stats = {f"{b:05d}": np.array([self.blocks[b].stats()["acceptance"], self.blocks[b].step_size,
                                       self.blocks[b].n_steps], dtype=np.float64) for b in self.mine}
        merged: dict[str, np.ndarray] = {}
        for part in env.comm.allgather_arrays({**prefixed("kept", mine_arrays), **prefixed("stats", stats)}):
            merged.update(part)
        kept_all = [merged[f"kept/{b:05d}"] for b in range(self.n_blocks)]  # (n_kept, chains_b, ...)
        # configurations ordered (block, chain, time): chain c = global chain index
        configs = np.concatenate([np.swapaxes(k, 0, 1) for k in kept_all], axis=0)
        n_chains, n_kept = configs.shape[0], configs.shape[1]
        data = configs.reshape((n_chains * n_kept, *lat.shape))
        acc = ObservableAccumulator(lat, self.n_bins)
        chain_of = np.repeat(np.arange(n_chains), n_kept)
        acc.update(torch.as_tensor(data), torch.as_tensor(chain_of % acc.n_bins))
        st = np.stack([merged[f"stats/{b:05d}"] for b in range(self.n_blocks)])
        env.log(f"HMC done: {data.shape[0]} configurations, acceptance {st[:, 0].mean():.3f}")
        series = prefixed("results/series", series_arrays(data, chain_of)) if self.series else {}
        return {**series, "data/configs": data,
                "data/chain": chain_of.astype(np.int64),
                "hmc/acceptance": st[:, 0].copy(), "hmc/step_size": st[:, 1].copy(),
                "hmc/n_steps": st[:, 2].astype(np.int64),
                **prefixed("acc_hmc", acc.to_arrays())}
