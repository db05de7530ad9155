"""Deterministic random streams: one master seed -> numpy SeedSequence tree.

campaign (master seed) -> grid point (index) -> rank/chunk -> named stream.
Every draw in the package uses a ``torch.Generator`` made here, so a run is reproducible
bit for bit on CPU and a resumed run continues the same streams (generator states are
checkpointed as uint8 arrays).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_key(name: str) -> int:
    """A stable 32-bit integer for a stream name (crc32, independent of PYTHONHASHSEED)."""
    return zlib.crc32(name.encode("utf-8"))


def seed_sequence(master_seed: int, *path: int | str) -> np.random.SeedSequence:
    """The SeedSequence at ``path`` below the master seed (strings are hashed stably)."""
    key = tuple(stream_key(p) if isinstance(p, str) else int(p) for p in path)
    return np.random.SeedSequence(int(master_seed), spawn_key=key)


def torch_generator(master_seed: int, *path: int | str, device="cpu") -> torch.Generator:
    """A torch.Generator seeded from the SeedSequence at ``path``."""
    ss = seed_sequence(master_seed, *path)
    seed = int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1, 2**32], dtype=np.uint64))
    g = torch.Generator(device=device)
    g.manual_seed(seed & ((1 << 63) - 1))
    return g


def generator_state(g: torch.Generator) -> np.ndarray:
    """The generator's state as a plain uint8 array (for checkpoints, no pickle)."""
    return g.get_state().cpu().numpy().copy()


def set_generator_state(g: torch.Generator, state: np.ndarray) -> torch.Generator:
    g.set_state(torch.from_numpy(np.asarray(state, dtype=np.uint8).copy()))
    return g
