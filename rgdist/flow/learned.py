"""The learned RG flow: observables along the reverse sampler, and their comparison with the
forward flow (rgdist.flow.forward).

:func:`learned_flow` draws ``n_samples`` fields from the prior at t = T and integrates the
reverse process (:func:`rgdist.sample.solvers.solve`) with ``score_fn``, recording the
ensemble at each t_k of ``t_grid``. If the score were exact and the solver exact, the
ensemble at t_k would be distributed as p_{t_k}, the law of the forward flow at t_k; the
comparison with :func:`rgdist.flow.forward.forward_flow` tests the learned score along the whole
flow, not only at t = 0.

Solver grid: ``scheme.time_grid(n_steps, grid, t_min)`` (T -> t_min) with every t_k of
``t_grid`` inserted (grid points within 1e-9 T of a t_k are replaced by it), so the records
are taken exactly at t_k; the grid then has n_steps + (number of inserted t_k) steps. If
t_grid contains 0 the grid is extended to end at t = 0 (for the ``exponential`` solver the last
step is an ancestral draw, exact for Gaussian data of reference spectrum ``prior_G``) and the
field recorded at t = 0 is the sampler's output; no Tweedie denoising is applied to records.

Chunks: chunk c holds samples [c*batch_size, (c+1)*batch_size) and draws its prior and all
solver noise from ``generator_for(generator, c)``; samples go to bin (sample index % n_bins)
(they are independent). With a callable generator (e.g. ``rgdist.sample.chunk_streams``),
chunks can be split over ranks and the merged :class:`FlowAccumulator` does not depend on the
split.

Comparison (:func:`compare_flows`): per observable and t_k,

    dev_k = (learned_k - forward_k) / sqrt(err_learned_k^2 + err_forward_k^2),

(the two ensembles are independent); :func:`deviation_summary` gives max_k |dev_k| per
observable. Against :func:`gaussian_flow` (errors 0) dev is the pull in units of the learned
error.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import torch

from rgdist.flow.base import (
    FlowAccumulator,
    FlowResult,
    GeneratorArg,
    check_L_phys,
    check_observables,
    check_pos_int,
    check_scheme,
    check_t_grid,
    chunk_ids,
    generator_for,
)
from rgdist.sample.ensemble import draw_chunk
from rgdist.sample.solvers import ALL_SOLVERS, DEFAULT_SNR

#: scalar observables compared by default
COMPARE_DEFAULT = ("m_R", "Z", "lambda_R", "chi", "binder", "xi2")


def merged_grid(scheme, t_flow: np.ndarray, n_steps: int, grid: str = "uniform",
                t_min: float | None = None) -> torch.Tensor:
    """Decreasing solver grid: the scheme's grid with the flow times ``t_flow`` inserted."""
    base = scheme.time_grid(n_steps, kind=grid, t_min=t_min).cpu().to(torch.float64).numpy()
    tol = 1e-9 * scheme.T
    pts = [float(x) for x in base if np.all(np.abs(t_flow - x) > tol)]
    pts += [float(x) for x in t_flow]
    out = np.unique(np.asarray(pts, dtype=np.float64))[::-1]
    return torch.as_tensor(out.copy(), dtype=torch.float64)


def accumulate_learned_flow(score_fn: Callable, scheme, n_samples: int, t_grid, *, n_steps: int,
                            generator: GeneratorArg, solver: str = "exponential",
                            grid: str = "uniform", t_min: float | None = None,
                            batch_size: int = 256, n_bins: int = 32, prior_G=None,
                            zero_mode_pool=None, chunks: Iterable[int] | None = None,
                            n_keep: int = 0, device=None, dtype=torch.float64,
                            corrector_steps: int = 1, snr: float = DEFAULT_SNR,
                            accumulator: FlowAccumulator | None = None):
    """Run the reverse sampler chunk by chunk; return ``(FlowAccumulator, snapshots)``.

    ``snapshots``: the first ``n_keep`` samples of chunk 0 at every t_k, numpy
    (K, n_keep, *shape), or None. Arguments as :func:`learned_flow`.
    """
    scheme = check_scheme(scheme)
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable (phi, t) -> score, got {type(score_fn).__name__}")
    if solver not in ALL_SOLVERS:
        raise ValueError(f"solver must be one of {ALL_SOLVERS}, got {solver!r}")
    lattice = scheme.lattice
    t = check_t_grid(t_grid, scheme.T)
    n_samples = check_pos_int("n_samples", n_samples)
    batch_size = check_pos_int("batch_size", batch_size)
    n_bins = check_pos_int("n_bins", n_bins)
    n_keep = check_pos_int("n_keep", n_keep, 0)
    times = merged_grid(scheme, t, n_steps, grid, t_min)
    if prior_G is not None:
        prior_G = torch.as_tensor(prior_G, dtype=torch.float64)
        if tuple(prior_G.shape) != lattice.shape:
            raise ValueError(f"prior_G must be a spectrum of shape {lattice.shape}, "
                             f"got {tuple(prior_G.shape)}")
    acc = FlowAccumulator(lattice, t, n_bins) if accumulator is None else accumulator
    if not np.array_equal(acc.t, t) or acc.n_bins != n_bins:
        raise ValueError("accumulator must have the same t grid and n_bins")
    grid_list = times.tolist()
    keep = None
    for c in chunk_ids(n_samples, batch_size, chunks):
        size = min(batch_size, n_samples - c * batch_size)
        G_dev = None if prior_G is None else prior_G.to(device=device)
        _, records = draw_chunk(score_fn, scheme, size, generator_for(generator, c), times,
                                solver=solver, prior_G=G_dev, zero_mode_pool=zero_mode_pool,
                                record_times=t, denoise=False, dtype=dtype, device=device,
                                corrector_steps=corrector_steps, snr=snr)
        keys = np.asarray(sorted(records), dtype=np.float64)
        bins = torch.arange(c * batch_size, c * batch_size + size, dtype=torch.int64) % n_bins
        snaps_c = []
        for k, tk in enumerate(t):
            j = int(np.argmin(np.abs(keys - tk)))
            if abs(keys[j] - tk) > 1e-9 * scheme.T:       # cannot happen: t_k is a grid point
                raise RuntimeError(f"no record at t={tk} (grid {grid_list[:3]}...)")
            phi = records[float(keys[j])]
            if not bool(torch.isfinite(phi).all()):
                raise ValueError(
                    f"the reverse sampler ({solver}, {len(grid_list) - 1} steps) produced non-finite "
                    f"fields at t = {tk:g} (chunk {c}); a variance-collapsing scheme whose spectrum "
                    "spans more than ~1e12 over the momenta at T exceeds float64 (lower T)")
            acc.update(k, phi, bins.to(phi.device))
            if n_keep and c == 0:
                snaps_c.append(phi[:n_keep].detach().cpu().to(torch.float64).numpy())
        if snaps_c:
            keep = np.stack(snaps_c)
    return acc, keep


def learned_flow(score_fn: Callable, scheme, n_samples: int, t_grid, *, n_steps: int,
                 generator: GeneratorArg, solver: str = "exponential", grid: str = "uniform",
                 t_min: float | None = None, batch_size: int = 256, n_bins: int = 32,
                 prior_G=None, zero_mode_pool=None, observables=None, L_phys=None,
                 n_keep: int = 0, device=None, dtype=torch.float64, corrector_steps: int = 1,
                 snr: float = DEFAULT_SNR) -> FlowResult:
    """Observables of the reverse sampler's ensemble at each t_k (module docstring).

    Args:
        score_fn: (phi (B, *shape), t (B,)) -> score, e.g. a trained model (no grad needed) or
            ``lambda phi, t: scheme.gaussian_score(phi, t, G)``.
        scheme: the forward scheme the score belongs to; t_grid: flow times in [0, T].
        n_samples, batch_size: ensemble size and chunk size; n_bins: jackknife bins.
        n_steps, grid, t_min: the scheme's solver grid (:meth:`Scheme.time_grid`), into which
            the t_k are inserted. solver: one of :data:`rgdist.sample.SOLVERS`.
        generator: torch.Generator (all chunks in order) or callable chunk -> Generator.
        prior_G: data spectrum for the prior (Sigma_T + A_T^2 G) and the solver's reference
            spectrum; zero_mode_pool: magnetizations for frozen zero modes (Polchinski mu2 = 0).
        observables, L_phys, n_keep: as :func:`rgdist.flow.forward.forward_flow`.
    """
    L_phys = check_L_phys(L_phys, check_scheme(scheme).lattice)
    names = check_observables(observables, L_phys)
    acc, snaps = accumulate_learned_flow(
        score_fn, scheme, n_samples, t_grid, n_steps=n_steps, generator=generator, solver=solver,
        grid=grid, t_min=t_min, batch_size=batch_size, n_bins=n_bins, prior_G=prior_G,
        zero_mode_pool=zero_mode_pool, n_keep=n_keep, device=device, dtype=dtype,
        corrector_steps=corrector_steps, snr=snr)
    return acc.result(names, L_phys, kind="learned", snapshots=snaps,
                      meta={"scheme": getattr(scheme, "name", ""), "solver": solver,
                            "n_steps": int(n_steps), "n": int(n_samples)})


def compare_flows(forward: FlowResult, learned: FlowResult, observables=None
                  ) -> dict[str, np.ndarray]:
    """{name: (learned - forward) / sqrt(err_l^2 + err_f^2)} per t_k, shape (K,) ((K, *shape)
    for ``g2``). Default names: the scalars of :data:`COMPARE_DEFAULT` present in both.
    nan where both errors are 0 or either value is nan."""
    for label, res in (("forward", forward), ("learned", learned)):
        if not isinstance(res, FlowResult):
            raise ValueError(f"{label} must be a FlowResult, got {type(res).__name__}")
    if forward.t.shape != learned.t.shape or not np.allclose(forward.t, learned.t, rtol=1e-9, atol=1e-12):
        raise ValueError(f"the flows have different t grids: {forward.t.tolist()} vs "
                         f"{learned.t.tolist()}")
    if observables is None:
        names = [n for n in COMPARE_DEFAULT if n in forward and n in learned]
    else:
        names = [observables] if isinstance(observables, str) else list(observables)
        missing = [n for n in names if n not in forward or n not in learned]
        if missing:
            common = sorted(set(forward.names) & set(learned.names))
            raise ValueError(f"observables {missing} are not in both flows; allowed: {common}")
    out = {}
    for name in names:
        vf, ef = forward[name]
        vl, el = learned[name]
        sigma = np.sqrt(np.asarray(ef, dtype=np.float64) ** 2 + np.asarray(el, dtype=np.float64) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = (np.asarray(vl, dtype=np.float64) - np.asarray(vf, dtype=np.float64)) / sigma
        out[name] = np.where(sigma > 0, dev, np.nan)
    return out


def deviation_summary(deviations: Mapping[str, np.ndarray]) -> dict[str, float]:
    """max over t_k (and momenta) of |dev| per observable (nan entries ignored; nan if all
    are nan)."""
    out = {}
    for name, dev in deviations.items():
        a = np.abs(np.asarray(dev, dtype=np.float64))
        out[name] = float(np.nanmax(a)) if np.any(np.isfinite(a)) else float("nan")
    return out
