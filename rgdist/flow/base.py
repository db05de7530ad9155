"""Shared pieces of the flow measurements (rgdist.flow.forward, rgdist.flow.learned): input
validation, :class:`FlowResult` (observables along a flow, with their results-file arrays),
:class:`FlowAccumulator` (one mergeable ObservableAccumulator per flow time) and the chunked
generators.

Physical units (SPEC section 1, the seed talk's m_R L): ``m_R_L = m_R * N`` is the
dimensionless product of the renormalized mass and the box size (N = lattice side; for
unequal sides N = V^(1/d)); it does not depend on L_phys. With ``L_phys`` given,
``m_R_phys = m_R * N / L_phys`` (spacing a = L_phys/N) is m_R in units of 1/L_phys's unit,
so m_R_phys * L_phys = m_R_L. Z, lambda_R and U are dimensionless; flow times stay in the
scheme's own (lattice) units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from rgdist.checks import check_positive_int as check_pos_int  # the flows' name for it
from rgdist.lattice.geometry import Lattice
from rgdist.measure import ObservableAccumulator, observables as obs


#: every observable a flow can report (``binder`` is the Binder cumulant U)
OBSERVABLES = ("m_R", "m_R_L", "m_R_phys", "Z", "lambda_R", "chi", "chi_conn", "binder", "xi2",
               "g2", "m", "abs_m", "m2", "m4", "mean_max_abs", "max_abs")
#: what a flow reports when ``observables`` is None (plus ``m_R_phys`` when L_phys is given)
DEFAULT_OBSERVABLES = ("m_R", "m_R_L", "Z", "lambda_R", "chi", "chi_conn", "binder", "xi2", "g2",
                       "abs_m", "mean_max_abs", "max_abs")


# --- validation -------------------------------------------------------------------------
def check_t_grid(t_grid, T: float) -> np.ndarray:
    """The flow times as a sorted (increasing) float64 array; each must lie in [0, T]."""
    try:
        t = np.asarray(t_grid.detach().cpu() if isinstance(t_grid, torch.Tensor) else t_grid,
                       dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"t_grid must be a 1D sequence of times in [0, T={T}], "
                         f"got {t_grid!r}") from None
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1 or t.size < 1:
        raise ValueError(f"t_grid must be a non-empty 1D sequence of times, got shape {t.shape}")
    tol = 1e-12 * max(T, 1.0)
    for i, v in enumerate(t.tolist()):
        if not math.isfinite(v) or v < 0 or v > T + tol:
            raise ValueError(f"t_grid[{i}] = {v!r} lies outside [0, T={T}] of the scheme")
    t = np.sort(np.clip(t, 0.0, T))
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"t_grid must not repeat a time, got {t.tolist()}")
    return t


def check_observables(observables, L_phys=None) -> tuple[str, ...]:
    """Validated observable names (default :data:`DEFAULT_OBSERVABLES`)."""
    if observables is None:
        names = DEFAULT_OBSERVABLES + (("m_R_phys",) if L_phys is not None else ())
    else:
        if isinstance(observables, str):
            observables = (observables,)
        names = tuple(observables)
        bad = [n for n in names if n not in OBSERVABLES]
        if bad or not names:
            raise ValueError(f"observables must be a non-empty list drawn from {list(OBSERVABLES)}; "
                             f"unknown: {bad}")
        if len(set(names)) != len(names):
            raise ValueError(f"observables must not repeat a name, got {list(names)}")
    if "m_R_phys" in names and L_phys is None:
        raise ValueError("observable 'm_R_phys' needs L_phys (the physical box size)")
    return names


def check_L_phys(L_phys, lattice: Lattice):
    if L_phys is None:
        return None
    if isinstance(L_phys, bool) or not isinstance(L_phys, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(float(L_phys)) and float(L_phys) > 0):
        raise ValueError(f"L_phys must be a finite number > 0 (physical box size), got {L_phys!r}")
    if len(set(lattice.shape)) != 1:
        raise ValueError(f"L_phys needs a lattice with equal sides, got shape {lattice.shape}")
    return float(L_phys)


def box_size(lattice: Lattice) -> float:
    """N, the lattice side in lattice units (V^(1/d) if the sides differ)."""
    if len(set(lattice.shape)) == 1:
        return float(lattice.shape[0])
    return float(lattice.volume) ** (1.0 / lattice.d)


def check_configs(configs, lattice: Lattice, name: str = "configs") -> torch.Tensor:
    if not isinstance(configs, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (n, {lattice.shape}), "
                         f"got {type(configs).__name__}")
    if configs.dim() != lattice.d + 1 or tuple(configs.shape[1:]) != lattice.shape:
        raise ValueError(f"{name} has shape {tuple(configs.shape)}, which does not match the "
                         f"scheme's lattice: expected (n, {', '.join(map(str, lattice.shape))})")
    if configs.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one configuration")
    if not configs.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {configs.dtype}")
    return configs


# --- results ------------------------------------------------------------------------------
@dataclass
class FlowResult:
    """Observables along the flow: ``values[name]`` and ``errors[name]`` have shape (K,)
    (``g2``: (K, *lattice.shape), fftn order), one entry per time ``t`` (K,) increasing.

    ``snapshots`` (optional): a few fields at each t_k, shape (K, n_keep, *lattice.shape).
    """

    t: np.ndarray
    values: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    snapshots: np.ndarray | None = None
    kind: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    def __getitem__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.values:
            raise KeyError(f"{name!r} is not in this flow; it has {list(self.values)}")
        return self.values[name], self.errors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named float64 arrays for the results file: ``t`` (K,), each observable as
        ``np.stack([value, err])`` (2, K[, *shape]) like ``estimates/<source>/<name>``, and
        ``snapshots`` when present."""
        out = {"t": np.asarray(self.t, dtype=np.float64).copy()}
        for name in self.values:
            out[name] = np.stack([np.asarray(self.values[name], dtype=np.float64),
                                  np.asarray(self.errors[name], dtype=np.float64)])
        if self.snapshots is not None:
            out["snapshots"] = np.asarray(self.snapshots, dtype=np.float64).copy()
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], kind: str = "") -> "FlowResult":
        """Inverse of :meth:`to_arrays`."""
        if "t" not in arrays:
            raise ValueError(f"arrays must contain 't' (the flow times), got keys {sorted(arrays)}")
        t = np.asarray(arrays["t"], dtype=np.float64).reshape(-1)
        values, errors = {}, {}
        for name, arr in arrays.items():
            if name in ("t", "snapshots"):
                continue
            if name not in OBSERVABLES:
                raise ValueError(f"arrays[{name!r}]: unknown observable; allowed {list(OBSERVABLES)}")
            arr = np.asarray(arr, dtype=np.float64)
            if arr.ndim < 2 or arr.shape[0] != 2 or arr.shape[1] != t.size:
                raise ValueError(f"arrays[{name!r}] must have shape (2, {t.size}, ...) "
                                 f"(value, err per time), got {arr.shape}")
            values[name], errors[name] = arr[0].copy(), arr[1].copy()
        snaps = arrays.get("snapshots")
        return cls(t=t, values=values, errors=errors,
                   snapshots=None if snaps is None else np.asarray(snaps, dtype=np.float64).copy(),
                   kind=kind)


def select_observables(estimate: dict, names: Sequence[str], lattice: Lattice, L_phys) -> dict:
    """The requested entries of one ObservableAccumulator-style estimate (value, err)."""
    out = {}
    side = box_size(lattice)
    for name in names:
        if name == "m_R_L":
            v, e = estimate["m_R"]
            out[name] = (np.float64(v) * side, np.float64(e) * side)
        elif name == "m_R_phys":
            v, e = estimate["m_R"]
            out[name] = (obs.to_physical_mass(v, lattice.shape[0], L_phys),
                         obs.to_physical_mass(e, lattice.shape[0], L_phys))
        else:
            out[name] = estimate[name]
    return out


def stack_results(per_t: list[dict], names, t, **kw) -> FlowResult:
    values = {n: np.stack([np.asarray(d[n][0], dtype=np.float64) for d in per_t]) for n in names}
    errors = {n: np.stack([np.asarray(d[n][1], dtype=np.float64) for d in per_t]) for n in names}
    return FlowResult(t=np.asarray(t, dtype=np.float64), values=values, errors=errors, **kw)


class FlowAccumulator:
    """One mergeable :class:`ObservableAccumulator` per flow time t_k.

    ``to_arrays()`` keys: ``t`` and ``k{k:03d}/<accumulator key>``; MPI: Allreduce each array
    with :meth:`reduction` (``"sum"``, or ``"max"`` for ``*/max_abs``; ``t`` is identical on all
    ranks), then :meth:`from_arrays`.
    """

    def __init__(self, lattice: Lattice, t_grid, n_bins: int, device=None):
        self.lattice = lattice
        self.t = np.asarray(t_grid, dtype=np.float64).reshape(-1)
        self.n_bins = check_pos_int("n_bins", n_bins)
        self.accs = [ObservableAccumulator(lattice, self.n_bins, device=device) for _ in self.t]

    def update(self, k: int, phi: torch.Tensor, bins) -> "FlowAccumulator":
        self.accs[k].update(phi, bins)
        return self

    def merge(self, other: "FlowAccumulator") -> "FlowAccumulator":
        if not isinstance(other, FlowAccumulator) or other.t.shape != self.t.shape \
                or not np.array_equal(other.t, self.t):
            raise ValueError("can only merge a FlowAccumulator with the same t grid")
        for mine, theirs in zip(self.accs, other.accs):
            mine.merge(theirs)
        return self

    @staticmethod
    def reduction(key: str) -> str:
        """How the array ``key`` of :meth:`to_arrays` combines across processes."""
        if key == "t":
            return "same"
        return ObservableAccumulator.REDUCTIONS[key.split("/", 1)[1]]

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"t": self.t.copy()}
        for k, acc in enumerate(self.accs):
            out.update({f"k{k:03d}/{key}": v for key, v in acc.to_arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, lattice: Lattice, arrays: Mapping[str, np.ndarray], device=None
                    ) -> "FlowAccumulator":
        if "t" not in arrays:
            raise ValueError(f"arrays must contain 't', got keys {sorted(arrays)[:5]}...")
        t = np.asarray(arrays["t"], dtype=np.float64).reshape(-1)
        parts = []
        for k in range(t.size):
            pre = f"k{k:03d}/"
            sub = {key[len(pre):]: v for key, v in arrays.items() if key.startswith(pre)}
            parts.append(ObservableAccumulator.from_arrays(lattice, sub, device=device))
        self = cls.__new__(cls)
        self.lattice, self.t = lattice, t
        self.n_bins = parts[0].n_bins if parts else 1
        self.accs = parts
        return self

    def result(self, observables=None, L_phys=None, *, kind: str = "", snapshots=None,
               meta: dict | None = None) -> FlowResult:
        """Jackknife estimates of ``observables`` at every t_k (see the module docstring)."""
        L_phys = check_L_phys(L_phys, self.lattice)
        names = check_observables(observables, L_phys)
        per_t = [select_observables(acc.estimate(), names, self.lattice, L_phys) for acc in self.accs]
        return stack_results(per_t, names, self.t, snapshots=snapshots, kind=kind,
                      meta=dict(meta or {}, L_phys=L_phys))


# --- generators and chunks ----------------------------------------------------------------
GeneratorArg = torch.Generator | Callable[[int], torch.Generator]


def generator_for(generator: GeneratorArg, chunk: int) -> torch.Generator:
    """``generator`` itself (shared by all chunks, in order) or ``generator(chunk)``."""
    if isinstance(generator, torch.Generator):
        return generator
    if callable(generator):
        g = generator(chunk)
        if not isinstance(g, torch.Generator):
            raise ValueError(f"generator(chunk) must return a torch.Generator, got {type(g).__name__}")
        return g
    raise ValueError("generator must be a torch.Generator or a callable chunk -> torch.Generator, "
                     f"got {type(generator).__name__}")


def chunk_ids(n: int, batch_size: int, chunks) -> list[int]:
    total = -(-n // batch_size)
    ids = list(range(total)) if chunks is None else [int(c) for c in chunks]
    bad = [c for c in ids if not 0 <= c < total]
    if bad:
        raise ValueError(f"chunks must lie in [0, {total}) for n={n}, batch_size={batch_size}; "
                         f"got {bad}")
    return ids


def check_scheme(scheme):
    for attr in ("lattice", "T", "sample_forward", "marginal_spectrum"):
        if not hasattr(scheme, attr):
            raise ValueError(f"scheme must be a rgdist.rg.Scheme (missing {attr!r}), "
                             f"got {type(scheme).__name__}")
    return scheme


def check_bins(bins, n: int, n_bins: int) -> torch.Tensor:
    if bins is None:
        return torch.arange(n, dtype=torch.int64) % n_bins
    b = torch.as_tensor(np.asarray(bins.cpu() if isinstance(bins, torch.Tensor) else bins))
    if b.shape != (n,) or b.is_floating_point() or b.dtype == torch.bool:
        raise ValueError(f"bins must be an integer array of shape ({n},) (one bin per "
                         f"configuration, e.g. chain % n_bins), got {tuple(b.shape)} {b.dtype}")
    if n and (int(b.min()) < 0 or int(b.max()) >= n_bins):
        raise ValueError(f"bins must lie in [0, {n_bins - 1}], got [{int(b.min())}, {int(b.max())}]")
    return b.to(torch.int64)
