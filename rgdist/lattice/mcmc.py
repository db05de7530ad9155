"""Shared parts of the batched lattice MCMC samplers (:class:`rgdist.lattice.hmc.HMC` and
:class:`rgdist.lattice.metropolis.LocalMetropolis`): argument validation, the starting fields,
dual-averaging step-size adaptation and the checks of a restored state dict.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rgdist.checks import check_positive_float as _positive_float
from rgdist.checks import check_positive_int as _positive_int
from rgdist.checks import check_unit_interval as _unit_interval
from rgdist.lattice.action import Phi4Action
from rgdist.lattice.geometry import Lattice


# --------------------------------------------------------------------------- validation
def _jitter(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"jitter must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"jitter must be a number in [0, 1), got {value}")
    return value


def check_sampler_args(action, lattice, n_chains, generator, device, dtype) -> tuple:
    """Validate what HMC and LocalMetropolis share; returns (n_chains, device, dtype)."""
    if not isinstance(action, Phi4Action):
        raise ValueError(f"action must be a Phi4Action, got {type(action).__name__}")
    if not isinstance(lattice, Lattice):
        raise ValueError(f"lattice must be a Lattice, got {type(lattice).__name__}")
    if action.d != lattice.d:
        raise ValueError(f"action.d = {action.d} does not match lattice.d = {lattice.d}")
    n_chains = _positive_int("n_chains", n_chains)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = torch.device(device)
    if generator.device.type != device.type:
        raise ValueError(
            f"generator lives on {generator.device} but device is {device}; "
            "make the generator on the sampler's device"
        )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return n_chains, device, dtype


def initial_fields(lattice: Lattice, n_chains: int, phi0, generator, device, dtype) -> torch.Tensor:
    """phi0 (validated and copied) or, if None, a hot start: unit white noise per site."""
    if phi0 is None:
        return lattice.white_noise(n_chains, generator, device, dtype)
    phi0 = lattice.check_field(phi0, "phi0")
    if phi0.shape[0] != n_chains:
        raise ValueError(f"phi0 must hold n_chains = {n_chains} fields, got {phi0.shape[0]}")
    if not torch.isfinite(phi0).all():
        raise ValueError("phi0 must be finite")
    return phi0.detach().to(device=device, dtype=dtype).clone()


def _scalar(x) -> np.ndarray:
    return np.asarray(x)


# --------------------------------------------------------------------------- adaptation
class DualAveraging:
    """Dual-averaging step-size adaptation on log(step) toward a target acceptance.

    h_t = (1 - 1/(t + t0)) h_{t-1} + (target - a_t)/(t + t0),
    log eps_t = mu - sqrt(t)/gamma * h_t,
    log eps_bar_t = t^-kappa log eps_t + (1 - t^-kappa) log eps_bar_{t-1},
    mu = log(10 eps_0); eps_t is used while adapting, eps_bar is the frozen result.
    """

    GAMMA, T0, KAPPA = 0.05, 10.0, 0.75
    KEYS = ("t", "h", "log_eps", "log_eps_bar", "mu")

    def __init__(self, step0: float, target: float, lo: float, hi: float):
        self.target, self.lo, self.hi = target, math.log(lo), math.log(hi)
        self.reset(step0)

    def reset(self, step0: float) -> None:
        self.t, self.h = 0, 0.0
        self.log_eps = self.log_eps_bar = math.log(step0)
        self.mu = math.log(10 * step0)

    def update(self, accept_rate: float) -> float:
        """Feed one mean acceptance; returns the next step to use."""
        if not math.isfinite(accept_rate):
            accept_rate = 0.0
        self.t += 1
        w = 1.0 / (self.t + self.T0)
        self.h = (1 - w) * self.h + w * (self.target - accept_rate)
        log_eps = self.mu - math.sqrt(self.t) / self.GAMMA * self.h
        self.log_eps = min(max(log_eps, self.lo), self.hi)
        eta = self.t ** (-self.KAPPA)
        self.log_eps_bar = eta * self.log_eps + (1 - eta) * self.log_eps_bar
        return math.exp(self.log_eps)

    @property
    def step(self) -> float:
        return math.exp(self.log_eps)

    @property
    def final_step(self) -> float:
        return math.exp(self.log_eps_bar)

    def state(self) -> dict[str, np.ndarray]:
        return {k: _scalar(getattr(self, k)) for k in self.KEYS}

    def load(self, d: dict) -> None:
        self.t = int(d["t"])
        for k in self.KEYS[1:]:
            setattr(self, k, float(d[k]))


# --------------------------------------------------------------------------- state dicts
def check_keys(d: dict, keys) -> None:
    missing = sorted(set(keys) - set(d))
    if missing:
        raise ValueError(f"state dict lacks {missing}")


def check_config(expected: dict[str, np.ndarray], d: dict) -> None:
    """Raise ValueError if a state dict lacks keys or was made with another configuration."""
    if not isinstance(d, dict):
        raise ValueError(f"state dict must be a dict, got {type(d).__name__}")
    for key, want in expected.items():
        if key not in d:
            raise ValueError(f"state dict lacks {key!r}")
        got = np.asarray(d[key])
        equal_nan = want.dtype.kind == "f" and got.dtype.kind == "f"
        if got.shape != want.shape or not np.array_equal(got, want, equal_nan=equal_nan):
            raise ValueError(f"state dict {key!r} = {got} does not match this sampler's {want}")
