"""Training data sources: fixed ensembles and HMC chains streaming during training.

A data source has ``sample(batch, generator) -> (batch, *shape)`` and ``state_dict()`` /
``load_state_dict()`` (named numpy arrays; empty for stateless sources).

Z2 augmentation (random global sign flips) is valid because the phi^4 action is even in phi,
so the sign-flipped ensemble has the same law.
"""
from __future__ import annotations

import numpy as np
import torch

from rgdist.lattice.geometry import Lattice


def _check_configs(configs) -> torch.Tensor:
    if not isinstance(configs, torch.Tensor) or configs.dim() < 2 or configs.shape[0] < 1:
        shape = (tuple(configs.shape) if isinstance(configs, torch.Tensor)
                 else type(configs).__name__)
        raise ValueError(f"configs must be a tensor of shape (n >= 1, *lattice_shape), got {shape}")
    if not configs.is_floating_point():
        raise ValueError(f"configs must be floating point, got {configs.dtype}")
    if not bool(torch.isfinite(configs).all()):
        raise ValueError("configs contain non-finite values")
    return configs


def measured_spectrum(configs: torch.Tensor, lattice: Lattice) -> torch.Tensor:
    """G2(p) = mean over configurations of |fft(phi)(p)|^2 / V (G2 units), float64."""
    lattice.check_field(configs, "configs")
    phi_p = lattice.fft(configs.to(torch.float64))
    return (phi_p.abs() ** 2).mean(0) / lattice.volume


def _random_signs(batch: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    bits = torch.randint(0, 2, (batch,), generator=generator, device=generator.device)
    return (2 * bits - 1).to(device=like.device, dtype=like.dtype)


class EnsembleData:
    """Random minibatches (with replacement) from a fixed ensemble (n, *shape); with
    ``augment`` each drawn configuration is multiplied by a random sign (Z2)."""

    def __init__(self, configs: torch.Tensor, *, augment: bool = True):
        self.configs = _check_configs(configs)
        if not isinstance(augment, bool):
            raise ValueError(f"augment must be True or False, got {augment!r}")
        self.augment = augment

    def __len__(self) -> int:
        return self.configs.shape[0]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        if isinstance(batch, bool) or not hasattr(batch, "__index__") or int(batch) < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        idx = torch.randint(len(self), (int(batch),), generator=generator, device=generator.device)
        out = self.configs[idx.to(self.configs.device)]
        if self.augment:
            out = out * _random_signs(out.shape[0], generator, out).reshape(
                (-1,) + (1,) * (out.dim() - 1))
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


class StreamingHMCData:
    """Minibatches from a ring buffer that HMC chains keep refilling during training.

    ``hmc`` (rgdist.lattice.hmc.HMC, thermalized) advances all its chains by
    ``trajectories_per_sample`` trajectories at every :meth:`sample` call; after every
    ``thin`` trajectories the current fields of all chains replace the oldest entries of the
    buffer (``buffer`` configurations). On construction the buffer is filled by running
    ``thin`` trajectories per refill. Minibatches are drawn uniformly from the buffer with
    the training generator (HMC uses its own generator, saved in ``state_dict``).
    Choose thin >= 2 tau_int so that refills are nearly independent.
    """

    def __init__(self, hmc, thin: int, buffer: int, *, trajectories_per_sample: int = 1,
                 augment: bool = True):
        for name, v in (("thin", thin), ("buffer", buffer),
                        ("trajectories_per_sample", trajectories_per_sample)):
            if isinstance(v, bool) or not hasattr(v, "__index__") or int(v) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (callable(getattr(hmc, "trajectory", None)) and hasattr(hmc, "phi")):
            raise ValueError("hmc must provide trajectory() and the current fields as .phi")
        if not isinstance(augment, bool):
            raise ValueError(f"augment must be True or False, got {augment!r}")
        self.hmc, self.thin, self.size = hmc, int(thin), int(buffer)
        self.per_sample = int(trajectories_per_sample)
        self.augment = augment
        n_chains = hmc.phi.shape[0]
        self.buffer = hmc.phi.new_zeros((self.size, *hmc.phi.shape[1:]))
        self.filled, self.head, self.since_push = 0, 0, 0
        while self.filled < self.size:
            for _ in range(self.thin):
                self.hmc.trajectory()
            self._push(self.hmc.phi)
        self.n_chains = n_chains

    def _push(self, phi: torch.Tensor) -> None:
        n = min(phi.shape[0], self.size)
        idx = (self.head + torch.arange(n, device=phi.device)) % self.size
        self.buffer[idx.to(self.buffer.device)] = phi[:n].to(self.buffer)
        self.head = (self.head + n) % self.size
        self.filled = min(self.filled + n, self.size)

    def advance(self) -> None:
        """Run ``trajectories_per_sample`` trajectories, pushing every ``thin``-th."""
        for _ in range(self.per_sample):
            self.hmc.trajectory()
            self.since_push += 1
            if self.since_push == self.thin:
                self._push(self.hmc.phi)
                self.since_push = 0

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        if isinstance(batch, bool) or not hasattr(batch, "__index__") or int(batch) < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        self.advance()
        idx = torch.randint(self.size, (int(batch),), generator=generator, device=generator.device)
        out = self.buffer[idx.to(self.buffer.device)]
        if self.augment:
            out = out * _random_signs(out.shape[0], generator, out).reshape(
                (-1,) + (1,) * (out.dim() - 1))
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        d = {f"hmc/{k}": v for k, v in self.hmc.state_dict().items()} \
            if hasattr(self.hmc, "state_dict") else {}
        d.update({"buffer": self.buffer.cpu().numpy().copy(),
                  "head": np.asarray(self.head, dtype=np.int64),
                  "since_push": np.asarray(self.since_push, dtype=np.int64)})
        return d

    def load_state_dict(self, state: dict) -> None:
        if tuple(np.shape(state["buffer"])) != tuple(self.buffer.shape):
            raise ValueError(f"state 'buffer' has shape {np.shape(state['buffer'])}, expected "
                             f"{tuple(self.buffer.shape)}")
        hmc_state = {k[4:]: v for k, v in state.items() if k.startswith("hmc/")}
        if hmc_state:
            self.hmc.load_state_dict(hmc_state)
        self.buffer = torch.as_tensor(np.asarray(state["buffer"])).to(self.buffer).clone()
        self.head = int(state["head"])
        self.since_push = int(state["since_push"])
        self.filled = self.size
