"""Vectorized single-site Metropolis for the lattice phi^4 action (a cross-check of HMC).

Sites are split into colour classes such that no two nearest neighbours share a colour; all
sites of one colour are updated at once (their conditional laws are independent given the
other colours). One sweep visits every colour once, in a fixed order, so every site gets
``n_hits`` Metropolis updates per sweep. Each colour update leaves exp(-S) invariant, hence
so does the sweep.

Colouring: c(x) = sum_mu c_mu(x_mu) mod K with a proper colouring c_mu of each periodic axis.
K = 2 (the parity checkerboard, c_mu(a) = a mod 2) when every N_mu is even; otherwise K = 3
and an odd axis uses c_mu(a) = a mod 2 for a < N_mu - 1, c_mu(N_mu - 1) = 2. Neighbours differ
in exactly one coordinate, where c_mu differs by a nonzero amount mod K.

Local action of site x with neighbour sum n_x = sum_mu (phi_{x+mu} + phi_{x-mu}):
    s_x(y) = (d + m2/2) y^2 - y n_x + lam/4 y^4,
and S(phi with phi_x -> y) - S(phi) = s_x(y) - s_x(phi_x).
Proposal y = phi_x + step_size * (2u - 1), u uniform in [0, 1) (symmetric).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from rgdist.lattice.action import Phi4Action
from rgdist.lattice.geometry import Lattice
from rgdist.lattice.hmc import (
    DualAveraging,
    _positive_float,
    _positive_int,
    _unit_interval,
    check_config,
    check_keys,
    check_sampler_args,
    initial_fields,
)
from rgdist.seeding import generator_state, set_generator_state


def site_colours(lattice: Lattice, device=None) -> tuple[torch.Tensor, int]:
    """Colour index per site (shape ``lattice.shape``, int64) and the number of colours."""
    n_colours = 2 if all(n % 2 == 0 for n in lattice.shape) else 3
    colour = torch.zeros(lattice.shape, dtype=torch.int64, device=device)
    for mu, n in enumerate(lattice.shape):
        c = torch.arange(n, device=device) % 2
        if n % 2 == 1:
            c[-1] = 2
        view = [1] * lattice.d
        view[mu] = n
        colour = colour + c.view(view)
    return colour % n_colours, n_colours


class LocalMetropolis:
    """Batched colour-ordered single-site Metropolis of ``n_chains`` independent chains.

    ``phi0=None`` starts hot (unit white noise). ``thermalize(adapt=True)`` tunes step_size
    toward ``target_accept`` (site acceptance) by dual averaging, then freezes it.
    """

    def __init__(self, action: Phi4Action, lattice: Lattice, n_chains: int, *,
                 step_size: float = 1.0, n_hits: int = 1, target_accept: float = 0.5,
                 generator: torch.Generator, device="cpu", dtype=torch.float64,
                 phi0: torch.Tensor | None = None):
        self.n_chains, self.device, self.dtype = check_sampler_args(
            action, lattice, n_chains, generator, device, dtype)
        self.action, self.lattice, self.generator = action, lattice, generator
        self.step_size = _positive_float("step_size", step_size)
        self.n_hits = _positive_int("n_hits", n_hits)
        self.target_accept = _unit_interval("target_accept", target_accept)
        colour, self.n_colours = site_colours(lattice, self.device)
        self.masks = [colour == c for c in range(self.n_colours)]
        self.adapter = DualAveraging(self.step_size, self.target_accept, lo=1e-4, hi=1e4)
        self.phi = initial_fields(lattice, self.n_chains, phi0, generator, self.device, self.dtype)
        self.n_sweeps = 0
        self.reset_stats()

    def _local(self, y: torch.Tensor, nsum: torch.Tensor) -> torch.Tensor:
        a = self.action
        y2 = y * y
        return (self.lattice.d + 0.5 * a.m2) * y2 - y * nsum + 0.25 * a.lam * y2 * y2

    def _neighbour_sum(self, phi: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(phi)
        for ax in self.lattice.dims:
            out = out + torch.roll(phi, 1, ax) + torch.roll(phi, -1, ax)
        return out

    @torch.no_grad()
    def sweep(self) -> torch.Tensor:
        """One sweep (every site n_hits times); returns the site acceptance rate per chain."""
        shape = self.phi.shape
        accepted = torch.zeros(self.n_chains, device=self.device, dtype=torch.int64)
        dims = tuple(range(1, self.phi.dim()))
        for _ in range(self.n_hits):
            shift = torch.rand(shape, generator=self.generator, device=self.device, dtype=self.dtype)
            shift = self.step_size * (2 * shift - 1)
            log_u = torch.rand(shape, generator=self.generator, device=self.device,
                               dtype=self.dtype).log()
            for mask in self.masks:
                nsum = self._neighbour_sum(self.phi)
                new = self.phi + shift
                ds = self._local(new, nsum) - self._local(self.phi, nsum)
                acc = mask & (log_u < -ds)
                self.phi = torch.where(acc, new, self.phi)
                accepted += acc.sum(dims)
        rate = accepted.to(self.dtype) / (self.n_hits * self.lattice.volume)
        self.n_sweeps += 1
        self._n_stats += 1
        self._rate_sum += rate
        return rate

    def thermalize(self, n_sweeps: int, adapt: bool = True) -> dict[str, float]:
        """Run n_sweeps sweeps (adapting step_size if ``adapt``), freeze, reset statistics."""
        n_sweeps = _positive_int("n_sweeps", n_sweeps, 0)
        acc_sum = 0.0
        for _ in range(n_sweeps):
            if adapt:
                self.step_size = self.adapter.step
            rate = float(self.sweep().mean())
            acc_sum += rate
            if adapt:
                self.adapter.update(rate)
        if adapt and self.adapter.t > 0:
            self.step_size = self.adapter.final_step
        self.reset_stats()
        return {"acceptance": acc_sum / max(n_sweeps, 1), "step_size": self.step_size}

    def iter_samples(self, n_sweeps: int, thin: int = 1) -> Iterator[torch.Tensor]:
        """Yield a copy of the fields (n_chains, *shape) after every ``thin``-th sweep."""
        n_sweeps = _positive_int("n_sweeps", n_sweeps, 0)
        thin = _positive_int("thin", thin)
        for k in range(1, n_sweeps + 1):
            self.sweep()
            if k % thin == 0:
                yield self.phi.clone()

    def sample(self, n_sweeps: int, thin: int = 1) -> torch.Tensor:
        """Kept fields, shape (n_sweeps // thin, n_chains, *shape)."""
        kept = list(self.iter_samples(n_sweeps, thin))
        if not kept:
            return self.phi.new_empty((0, self.n_chains, *self.lattice.shape))
        return torch.stack(kept)

    def reset_stats(self) -> None:
        self._n_stats = 0
        self._rate_sum = torch.zeros(self.n_chains, device=self.device, dtype=self.dtype)

    def stats(self) -> dict:
        rate = (self._rate_sum / max(self._n_stats, 1)).cpu().numpy()
        return {"n_sweeps": self._n_stats, "acceptance": float(rate.mean()),
                "acceptance_per_chain": rate}

    def _config(self) -> dict[str, np.ndarray]:
        return {
            "config/shape": np.asarray(self.lattice.shape, dtype=np.int64),
            "config/n_chains": np.asarray(np.int64(self.n_chains)),
            "config/m2": np.asarray(self.action.m2), "config/lam": np.asarray(self.action.lam),
            "config/n_hits": np.asarray(np.int64(self.n_hits)),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit for bit, as named numpy arrays."""
        d = self._config()
        d.update({
            "phi": self.phi.cpu().numpy().copy(),
            "generator": generator_state(self.generator),
            "step_size": np.asarray(self.step_size),
            "target_accept": np.asarray(self.target_accept),
            "n_sweeps": np.asarray(np.int64(self.n_sweeps)),
            "stats/n": np.asarray(np.int64(self._n_stats)),
            "stats/rate_sum": self._rate_sum.cpu().numpy().copy(),
        })
        d.update({f"adapt/{k}": v for k, v in self.adapter.state().items()})
        return d

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict`; lattice, couplings, n_chains, n_hits must match."""
        check_config(self._config(), d)
        check_keys(d, self.state_dict().keys())
        if np.shape(d["phi"]) != (self.n_chains, *self.lattice.shape):
            raise ValueError(f"state dict 'phi' has shape {np.shape(d['phi'])}, expected "
                             f"{(self.n_chains, *self.lattice.shape)}")
        self.phi = torch.as_tensor(np.asarray(d["phi"]), dtype=self.dtype).to(self.device).clone()
        set_generator_state(self.generator, d["generator"])
        self.step_size = float(d["step_size"])
        self.target_accept = _unit_interval("target_accept", d["target_accept"])
        self.adapter.target = self.target_accept
        self.n_sweeps = int(d["n_sweeps"])
        self._n_stats = int(d["stats/n"])
        self._rate_sum = torch.as_tensor(np.asarray(d["stats/rate_sum"]),
                                         dtype=self.dtype).to(self.device).clone()
        self.adapter.load({k: d[f"adapt/{k}"] for k in DualAveraging.KEYS})
