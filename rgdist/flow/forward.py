"""RG flow of observables under the forward (noising) scheme, and its Gaussian closed form.

The RG flow of an ensemble is the flow of its observables along the forward process: the law
of phi_t is p_t = (data law) pushed through the exact Gaussian kernel of the scheme,

    phi~_t(p) = A_t(p) phi~_0(p) + sqrt(Sigma_t(p)) xi~(p)        (rgdist.rg.Scheme).

:func:`forward_flow` measures, at each time t_k of a grid, the observables of
``scheme.sample_forward(phi0, t_k)`` for every configuration phi0 of a decorrelated ensemble:

    m_R(t), Z(t), lambda_R(t), chi(t), U(t) = binder(t), G2(p; t), xi2(t), ...

(formulas in :mod:`rgdist.measure.observables`), with delete-one-bin jackknife errors; the
bin of configuration i is ``bins[i]`` (default: i % n_bins; pass chain % n_bins for Markov
chains, whose bins must be independent). **Each t_k is drawn independently from the same
phi0** (fresh noise xi per t_k, not a path phi_{t_1} -> phi_{t_2} -> ...). Each t_k is then an
exact sample of p_{t_k}; the estimates at different t_k share phi0 and so are correlated
(their error bars are each correct; a fit across t must allow for the correlation).

:func:`gaussian_flow` is the closed form for Gaussian data of spectrum G (G2 units): p_t is
Gaussian with spectrum S_t = A_t^2 G + Sigma_t, hence (M Gaussian of variance S_t(0)/V)

    G2(p; t) = S_t(p),   chi = S_t(0),   chi_conn = (1 - 2/pi) S_t(0),
    xi2^2 = (S_t(0)/S_t(p1) - 1) / (4 sin^2(pi/N)),   m_R = 1/xi2,   Z = m_R^2 S_t(0),
    U = 0,   lambda_R = 0                             (all errors 0).

Units: see :mod:`rgdist.flow.base` (``m_R_L`` = m_R N is dimensionless).

Results are :class:`FlowResult` objects (kind ``"forward"`` and ``"gaussian"``);
:class:`FlowAccumulator` (both in :mod:`rgdist.flow.base`) holds one mergeable
:class:`~rgdist.measure.ObservableAccumulator` per t_k, so ranks that each push a part of
the ensemble can Allreduce/merge and get the same answer as one process.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from rgdist.flow.base import (
    DEFAULT_OBSERVABLES,
    OBSERVABLES,
    FlowAccumulator,
    FlowResult,
    GeneratorArg,
    box_size,
    check_bins,
    check_configs,
    check_L_phys,
    check_observables,
    check_pos_int,
    check_scheme,
    check_t_grid,
    chunk_ids,
    generator_for,
    select_observables,
    stack_results,
)
from rgdist.lattice.geometry import Lattice
from rgdist.measure import observables as obs

__all__ = [  # FlowResult, FlowAccumulator, OBSERVABLES, ...: re-exported from rgdist.flow.base
    "OBSERVABLES", "DEFAULT_OBSERVABLES", "FlowAccumulator", "FlowResult", "box_size",
    "accumulate_forward_flow", "forward_flow", "gaussian_moments", "gaussian_flow", "flow_snapshots",
]


# --- forward flow --------------------------------------------------------------------------
def accumulate_forward_flow(configs: torch.Tensor, scheme, t_grid, *, generator: GeneratorArg,
                            n_bins: int, bins=None, batch_size: int | None = None,
                            chunks: Iterable[int] | None = None, n_keep: int = 0,
                            accumulator: FlowAccumulator | None = None):
    """Push ``configs`` through the forward scheme at each t_k; return ``(acc, snapshots)``.

    Chunk c = configs[c*batch_size : (c+1)*batch_size] draws, for k = 0..K-1 in order, its
    noise from ``generator_for(generator, c)``. ``chunks`` restricts the work to some chunks
    (MPI: ``range(rank, n_chunks, size)``; merging the accumulators of all chunks gives the
    single-process result). ``snapshots``: the first ``n_keep`` configurations of chunk 0 at
    every t_k, (K, n_keep, *shape) numpy, or None.
    """
    scheme = check_scheme(scheme)
    lattice = scheme.lattice
    configs = check_configs(configs, lattice)
    t = check_t_grid(t_grid, scheme.T)
    n_bins = check_pos_int("n_bins", n_bins)
    n = configs.shape[0]
    batch_size = n if batch_size is None else check_pos_int("batch_size", batch_size)
    n_keep = check_pos_int("n_keep", n_keep, 0)
    all_bins = check_bins(bins, n, n_bins)
    acc = FlowAccumulator(lattice, t, n_bins) if accumulator is None else accumulator
    if not np.array_equal(acc.t, t) or acc.n_bins != n_bins:
        raise ValueError("accumulator must have the same t grid and n_bins")
    keep = [] if n_keep else None
    with torch.no_grad():
        for c in chunk_ids(n, batch_size, chunks):
            gen = generator_for(generator, c)
            phi0 = configs[c * batch_size:(c + 1) * batch_size]
            b = all_bins[c * batch_size:(c + 1) * batch_size]
            for k, tk in enumerate(t):
                phi_t, _ = scheme.sample_forward(phi0, float(tk), gen)
                acc.update(k, phi_t, b.to(phi_t.device))
                if keep is not None and c == 0:
                    keep.append(phi_t[:n_keep].detach().cpu().to(torch.float64).numpy())
    snaps = np.stack(keep) if keep else None
    return acc, snaps


def forward_flow(configs: torch.Tensor, scheme, t_grid, *, generator: GeneratorArg, n_bins: int,
                 bins=None, observables=None, batch_size: int | None = None, L_phys=None,
                 n_keep: int = 0) -> FlowResult:
    """Observables of the forward flow of a decorrelated ensemble (module docstring).

    Args:
        configs: (n, *scheme.lattice.shape) data configurations phi_0.
        scheme: a :class:`rgdist.rg.Scheme`; t_grid: times in [0, scheme.T] (sorted here).
        generator: torch.Generator (or chunk -> Generator) for the forward noise.
        n_bins: jackknife bins; ``bins`` (n,) int: bin of each configuration (default i % n_bins).
        observables: names from :data:`OBSERVABLES` (default :data:`DEFAULT_OBSERVABLES`).
        batch_size: configurations pushed at once (memory bound); L_phys: physical box size.
        n_keep: keep that many fields per t_k in ``FlowResult.snapshots`` (for images).
    """
    L_phys = check_L_phys(L_phys, check_scheme(scheme).lattice)
    names = check_observables(observables, L_phys)
    acc, snaps = accumulate_forward_flow(configs, scheme, t_grid, generator=generator, n_bins=n_bins,
                                         bins=bins, batch_size=batch_size, n_keep=n_keep)
    return acc.result(names, L_phys, kind="forward", snapshots=snaps,
                      meta={"scheme": getattr(scheme, "name", ""), "n": int(configs.shape[0])})


# --- Gaussian closed form -------------------------------------------------------------------
def gaussian_moments(S: np.ndarray, lattice: Lattice) -> dict[str, np.ndarray]:
    """Exact moments of a Gaussian field of spectrum S (..., *shape): M ~ N(0, S(0)/V)."""
    S = np.asarray(S, dtype=np.float64)
    s0 = S[(Ellipsis,) + (0,) * lattice.d]
    m2 = s0 / lattice.volume
    return {"m": np.zeros_like(m2), "abs_m": np.sqrt(2.0 * m2 / math.pi), "m2": m2,
            "m4": 3.0 * m2 * m2, "g2": S}


def gaussian_flow(lattice: Lattice, scheme, G, t_grid, *, observables=None, L_phys=None
                  ) -> FlowResult:
    """Closed-form flow for Gaussian data of spectrum ``G`` (lattice.shape, G2 units, > 0):
    S_t = A_t^2 G + Sigma_t, then the observables of a Gaussian field of spectrum S_t (module
    docstring). Errors are 0; ``mean_max_abs`` and ``max_abs`` have no closed form (nan)."""
    if not isinstance(lattice, Lattice):
        raise ValueError(f"lattice must be a rgdist Lattice, got {type(lattice).__name__}")
    scheme = check_scheme(scheme)
    if scheme.lattice != lattice:
        raise ValueError(f"lattice {lattice} does not match the scheme's lattice {scheme.lattice}")
    L_phys = check_L_phys(L_phys, lattice)
    names = check_observables(observables, L_phys)
    t = check_t_grid(t_grid, scheme.T)
    G = torch.as_tensor(G, dtype=torch.float64).detach().cpu()
    if tuple(G.shape) != lattice.shape or not bool(torch.isfinite(G).all()) or bool((G < 0).any()):
        raise ValueError(f"G must be a finite, non-negative spectrum of shape {lattice.shape}, "
                         f"got shape {tuple(G.shape)}")
    S = scheme.marginal_spectrum(torch.as_tensor(t, dtype=torch.float64), G).cpu().numpy()
    est = obs.ensemble_observables(gaussian_moments(S, lattice), lattice)
    est["binder"] = np.zeros_like(est["binder"])        # exactly 0 for Gaussian M
    est["lambda_R"] = np.zeros_like(est["lambda_R"])    # connected 4-point function vanishes
    est["mean_max_abs"] = np.full(t.shape, np.nan)
    est["max_abs"] = np.full(t.shape, np.nan)
    per_t = []
    for k in range(t.size):
        one = {name: (val[k], np.zeros_like(val[k])) for name, val in est.items()}
        per_t.append(select_observables(one, names, lattice, L_phys))
    return stack_results(per_t, names, t, kind="gaussian",
                  meta={"scheme": getattr(scheme, "name", ""), "L_phys": L_phys})


def flow_snapshots(configs: torch.Tensor, scheme, t_grid, *, generator: torch.Generator,
                   n_keep: int = 1) -> np.ndarray:
    """The first ``n_keep`` configurations pushed to each t_k (independent noise per t_k):
    numpy (K, n_keep, *shape), t sorted increasing. For images of the flow."""
    configs = check_configs(configs, check_scheme(scheme).lattice)
    n_keep = check_pos_int("n_keep", n_keep)
    t = check_t_grid(t_grid, scheme.T)
    phi0 = configs[:n_keep]
    with torch.no_grad():
        return np.stack([scheme.sample_forward(phi0, float(tk), generator)[0].cpu()
                         .to(torch.float64).numpy() for tk in t])
