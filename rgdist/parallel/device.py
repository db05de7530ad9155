"""Which device and how many CPU threads a rank uses.

``choose_device``: ``cuda:(local_rank % n_gpus)`` when CUDA exists and the policy allows,
otherwise the CPU.  ``configure_threads``: ``max(1, cores // ranks_on_node)`` torch
threads, cores being this process's CPU affinity set, so that threads x ranks <= cores.

torch is imported inside the functions. The environment overrides (``RGDIST_DEVICE``,
``RGDIST_NUM_THREADS``) are read by :mod:`rgdist.settings`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rgdist import settings

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_POLICIES = settings.DEVICE_POLICIES


def choose_device(local_rank: int, policy: str = "auto") -> "torch.device":
    """The torch device of a rank with node-local rank ``local_rank``.

    ``auto``: ``cuda:(local_rank % torch.cuda.device_count())`` when CUDA is available,
    else ``cpu``.  ``cpu``: always the CPU.  ``cuda``: like auto but an error without CUDA.
    ``RGDIST_DEVICE``, when set, replaces ``policy``.
    """
    import torch

    policy = settings.device_policy() or policy
    if policy not in DEVICE_POLICIES:
        raise ValueError(f"policy: must be one of {DEVICE_POLICIES}, got {policy!r}")
    if int(local_rank) < 0:
        raise ValueError(f"local_rank: must be >= 0, got {local_rank}")
    if policy == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return torch.device("cuda", int(local_rank) % torch.cuda.device_count())
    if policy == "cuda":
        from rgdist.errors import RgdistError

        raise RgdistError("device policy 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device("cpu")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity set; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def configure_threads(ranks_on_node: int) -> int:
    """Set torch's intra-op threads to ``max(1, cores // ranks_on_node)`` and return it.

    ``RGDIST_NUM_THREADS`` (a positive int), when set, is used instead.
    """
    import torch

    if int(ranks_on_node) < 1:
        raise ValueError(f"ranks_on_node: must be >= 1, got {ranks_on_node}")
    n = settings.num_threads() or max(1, available_cores() // int(ranks_on_node))
    torch.set_num_threads(n)
    return n
