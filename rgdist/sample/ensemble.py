"""Batched ensembles from the reverse process, split into independently seeded chunks.

Chunk c holds samples [c * batch_size, min((c + 1) * batch_size, n_samples)) and draws its
prior and all solver noise from its own generator ``seed_streams(c)``. The samples of a chunk
therefore do not depend on which process computes it or on which other chunks run, so the
chunks can be split over MPI ranks (``chunks=range(rank, n_chunks, size)``) and the union is
the same ensemble, bit for bit on one device kind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from rgdist.checks import check_positive_int as _check_pos_int
from rgdist.rg.schemes import Scheme
from rgdist.sample.solvers import ALL_SOLVERS, DEFAULT_SNR, ScoreFn, solve
from rgdist.seeding import torch_generator


@dataclass
class EnsembleResult:
    """samples: (n, *lattice.shape) in chunk order; records: grid time -> (n, *shape);
    nfe: score evaluations per configuration; chunks: the chunk indices computed;
    times: the float64 grid used."""

    samples: torch.Tensor
    records: dict[float, torch.Tensor] = field(default_factory=dict)
    nfe: int = 0
    chunks: tuple[int, ...] = ()
    times: torch.Tensor | None = None


def n_chunks(n_samples: int, batch_size: int) -> int:
    _check_pos_int("n_samples", n_samples)
    _check_pos_int("batch_size", batch_size)
    return -(-int(n_samples) // int(batch_size))


def chunk_streams(master_seed: int, *path: int | str, device="cpu") -> Callable[[int], torch.Generator]:
    """chunk index -> torch_generator(master_seed, *path, "chunk", index)."""
    return lambda c: torch_generator(master_seed, *path, "chunk", int(c), device=device)


def _streams(seed_streams, device) -> Callable[[int], torch.Generator]:
    if callable(seed_streams):
        return seed_streams
    if isinstance(seed_streams, (tuple, list)) and seed_streams:
        return chunk_streams(*seed_streams, device=device)
    if hasattr(seed_streams, "__index__") and not isinstance(seed_streams, bool):
        return chunk_streams(int(seed_streams), "sample", device=device)
    raise ValueError("seed_streams must be a callable chunk_index -> torch.Generator, a master "
                     f"seed (int) or a tuple (master_seed, *path), got {seed_streams!r}")


def draw_chunk(score_fn: ScoreFn, scheme: Scheme, size: int, generator: torch.Generator,
               times: torch.Tensor, *, solver: str, prior_G=None, zero_mode_pool=None,
               record_times=None, denoise: bool = True, dtype=torch.float64, device=None,
               corrector_steps: int = 1, snr: float = DEFAULT_SNR):
    """One chunk of the reverse process: ``size`` prior draws at T from ``generator``, then
    the solver on the decreasing grid ``times`` with the same generator for its noise.
    Returns ``(phi_0, records)`` as :func:`rgdist.sample.solvers.solve`. ``prior_G`` is the
    prior's data spectrum and the solver's reference spectrum G. Every chunked driver (this
    module's :func:`sample_ensemble`, the learned RG flow, the campaign's sampling stage)
    draws its chunks through this one function."""
    phi_T = scheme.sample_prior(size, generator, G=prior_G, dtype=dtype, device=device,
                                zero_mode_pool=zero_mode_pool)
    return solve(score_fn, scheme, phi_T, times, solver=solver, generator=generator,
                 record_times=record_times, denoise=denoise, corrector_steps=corrector_steps,
                 snr=snr, G=prior_G)


def sample_ensemble(score_fn: ScoreFn, scheme: Scheme, n_samples: int, *, n_steps: int,
                    solver: str = "exponential", grid: str = "uniform", t_min: float | None = None,
                    batch_size: int = 256, seed_streams, prior_G=None, zero_mode_pool=None,
                    record_times=None, chunks: Iterable[int] | None = None, device=None,
                    dtype=torch.float64, denoise: bool = True, corrector_steps: int = 1,
                    snr: float = DEFAULT_SNR) -> EnsembleResult:
    """Draw ``n_samples`` configurations (or the given ``chunks`` of them).

    Per chunk: phi_T = scheme.sample_prior(size, gen, G=prior_G, zero_mode_pool=...), then
    :func:`rgdist.sample.solvers.solve` on ``scheme.time_grid(n_steps, grid, t_min)``.
    ``prior_G`` (the data's Gaussian spectrum, if known) also serves as the solver's reference
    spectrum G. ``seed_streams``: callable chunk -> generator (on ``device``), a master seed, or
    (master_seed, *path).
    """
    if solver not in ALL_SOLVERS:
        raise ValueError(f"solver must be one of {ALL_SOLVERS}, got {solver!r}")
    if not isinstance(scheme, Scheme):
        raise ValueError(f"scheme must be a rgdist.rg.Scheme, got {type(scheme).__name__}")
    total = n_chunks(n_samples, batch_size)
    n_samples, batch_size = int(n_samples), int(batch_size)
    chunk_ids = tuple(range(total)) if chunks is None else tuple(int(c) for c in chunks)
    bad = [c for c in chunk_ids if not 0 <= c < total]
    if bad:
        raise ValueError(f"chunks must lie in [0, {total}) for n_samples={n_samples}, "
                         f"batch_size={batch_size}; got {bad}")
    times = scheme.time_grid(n_steps, kind=grid, t_min=t_min)
    streams = _streams(seed_streams, device)

    calls = [0]

    def counted(phi, t):
        calls[0] += 1
        return score_fn(phi, t)

    samples, records, nfe = [], {}, 0
    for c in chunk_ids:
        size = min(batch_size, n_samples - c * batch_size)
        calls[0] = 0
        phi, rec = draw_chunk(counted, scheme, size, streams(c), times, solver=solver,
                              prior_G=prior_G, zero_mode_pool=zero_mode_pool,
                              record_times=record_times, denoise=denoise, dtype=dtype,
                              device=device, corrector_steps=corrector_steps, snr=snr)
        nfe = calls[0]
        samples.append(phi)
        for t, x in rec.items():
            records.setdefault(t, []).append(x)
    lat_shape = scheme.lattice.shape
    out = torch.cat(samples) if samples else torch.empty((0, *lat_shape), dtype=dtype, device=device)
    return EnsembleResult(samples=out, records={t: torch.cat(v) for t, v in records.items()},
                          nfe=nfe, chunks=chunk_ids, times=times)
