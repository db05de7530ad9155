"""Mergeable per-bin accumulator of the SPEC section 3 observables.

Per bin b the accumulator holds power sums over the configurations assigned to it (float64):

    count_b,  sum M,  sum |M|,  sum M^2,  sum M^4,  sum max|phi|,  sum G2(p) (all p),
    and max_b = max max|phi| (a running maximum, not a sum).

The caller chooses each configuration's bin (``update(phi, bins)``): e.g. ``chain_id % n_bins``
for Markov chains (chains are independent, so bins are too), or the global sample index
``% n_bins`` for independent samples.  Because every entry except ``max_abs`` is a sum,
accumulators built from disjoint parts of the data merge exactly (up to float rounding):

    MPI: to_arrays() on every rank; Allreduce each array with the op named in
    ``ObservableAccumulator.REDUCTIONS`` ("sum" for all, "max" for "max_abs");
    ObservableAccumulator.from_arrays(lattice, reduced).  (max_abs starts at 0 and |phi| >= 0,
    so MAX is exact; a SUM would be wrong for it.)

Estimates (``estimate()``): delete-one-bin jackknife (``rgdist.measure.stats.jackknife``) in
which every derived quantity is recomputed from each replica's means; empty bins are skipped.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from rgdist.lattice.geometry import Lattice
from rgdist.measure import observables as obs
from rgdist.measure.stats import jackknife

_SCALAR_SUMS = ("sum_m", "sum_abs_m", "sum_m2", "sum_m4", "sum_max_abs")


class ObservableAccumulator:
    """Per-bin power sums of M, |M|, M^2, M^4, max|phi| and G2(p); mergeable, jackknifed.

    Args:
        lattice: the :class:`~rgdist.lattice.geometry.Lattice` of the fields.
        n_bins: number of jackknife bins (>= 2 for error bars).
        device: where the sums live (default CPU).  Fields may live elsewhere: per-bin partial
            sums are formed on the field's device and only ``n_bins * V`` numbers move.
    """

    #: how each entry of :meth:`to_arrays` combines across processes
    REDUCTIONS = {"count": "sum", **{k: "sum" for k in _SCALAR_SUMS}, "sum_g2": "sum", "max_abs": "max"}

    def __init__(self, lattice: Lattice, n_bins: int, device=None):
        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a rgdist Lattice, got {type(lattice).__name__}")
        if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
        self.lattice = lattice
        self.n_bins = int(n_bins)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self._data = {
            "count": torch.zeros(self.n_bins, dtype=torch.int64, device=self.device),
            **{k: torch.zeros(self.n_bins, **f64) for k in _SCALAR_SUMS},
            "sum_g2": torch.zeros((self.n_bins, *lattice.shape), **f64),
            "max_abs": torch.zeros(self.n_bins, **f64),
        }

    def __repr__(self) -> str:
        return f"ObservableAccumulator({self.lattice!r}, n_bins={self.n_bins}, n={self.n})"

    # --- filling -------------------------------------------------------------------
    def _bins(self, bins, batch: int, device) -> torch.Tensor:
        if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
            bins = torch.full((batch,), int(bins), dtype=torch.int64, device=device)
        elif not isinstance(bins, torch.Tensor):
            bins = torch.as_tensor(np.asarray(bins))
        if bins.dtype in (torch.bool,) or bins.is_floating_point() or bins.is_complex():
            raise ValueError(f"bins must be an integer tensor of shape ({batch},), got dtype {bins.dtype}")
        if tuple(bins.shape) != (batch,):
            raise ValueError(f"bins must have shape ({batch},) (one bin per configuration), "
                             f"got {tuple(bins.shape)}")
        bins = bins.to(device=device, dtype=torch.int64)
        if batch and (int(bins.min()) < 0 or int(bins.max()) >= self.n_bins):
            raise ValueError(f"bins must lie in [0, {self.n_bins - 1}] (n_bins = {self.n_bins}), "
                             f"got range [{int(bins.min())}, {int(bins.max())}]")
        return bins

    @torch.no_grad()
    def update(self, phi: torch.Tensor, bins) -> "ObservableAccumulator":
        """Add a batch ``phi`` ``(B, *lattice.shape)``; ``bins`` is an int tensor ``(B,)``
        (or one int for the whole batch) giving each configuration's bin.  Returns self."""
        self.lattice.check_field(phi)
        x = phi.detach().to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("phi contains non-finite values (nan or inf); filter them before update")
        idx = self._bins(bins, x.shape[0], x.device)
        m = obs.magnetization(x)
        m2 = m * m
        mx = obs.max_abs(x)
        per_config = {"sum_m": m, "sum_abs_m": m.abs(), "sum_m2": m2, "sum_m4": m2 * m2,
                      "sum_max_abs": mx, "sum_g2": obs.two_point(x, self.lattice)}
        for key, value in per_config.items():
            part = torch.zeros((self.n_bins, *value.shape[1:]), dtype=torch.float64, device=x.device)
            part.index_add_(0, idx, value)
            self._data[key] += part.to(self.device)
        self._data["count"] += torch.bincount(idx, minlength=self.n_bins).to(self.device)
        peak = torch.zeros(self.n_bins, dtype=torch.float64, device=x.device)
        peak.scatter_reduce_(0, idx, mx, reduce="amax", include_self=True)
        torch.maximum(self._data["max_abs"], peak.to(self.device), out=self._data["max_abs"])
        return self

    def merge(self, other: "ObservableAccumulator") -> "ObservableAccumulator":
        """Add ``other`` into self (sums add, max_abs takes the maximum).  Returns self."""
        if not isinstance(other, ObservableAccumulator):
            raise ValueError(f"other must be an ObservableAccumulator, got {type(other).__name__}")
        if other.lattice != self.lattice or other.n_bins != self.n_bins:
            raise ValueError(f"cannot merge {other!r} into {self!r}: lattice and n_bins must match")
        for key, op in self.REDUCTIONS.items():
            theirs = other._data[key].to(self.device)
            if op == "sum":
                self._data[key] += theirs
            else:
                torch.maximum(self._data[key], theirs, out=self._data[key])
        return self

    # --- serialization (MPI, checkpoints) --------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the state as numpy arrays (``count`` int64, the rest float64), keyed as
        :attr:`REDUCTIONS`; leading axis = bin."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self._data.items()}

    @classmethod
    def from_arrays(cls, lattice: Lattice, arrays: Mapping[str, np.ndarray], device=None
                    ) -> "ObservableAccumulator":
        """Rebuild an accumulator from :meth:`to_arrays` output (e.g. after an Allreduce)."""
        if set(arrays) != set(cls.REDUCTIONS):
            raise ValueError(f"arrays must have exactly the keys {sorted(cls.REDUCTIONS)}, "
                             f"got {sorted(arrays)}")
        count = np.asarray(arrays["count"])
        if count.ndim != 1 or count.size < 1:
            raise ValueError(f"arrays['count'] must be 1-D over bins, got shape {count.shape}")
        acc = cls(lattice, int(count.size), device=device)
        for key, target in acc._data.items():
            value = np.asarray(arrays[key])
            if value.shape != tuple(target.shape):
                raise ValueError(f"arrays[{key!r}] must have shape {tuple(target.shape)}, got {value.shape}")
            target.copy_(torch.as_tensor(value).to(dtype=target.dtype))
        if np.any(count < 0):
            raise ValueError("arrays['count'] must be >= 0")
        return acc

    # --- results -------------------------------------------------------------------
    @property
    def counts(self) -> np.ndarray:
        """Configurations per bin, int64 array ``(n_bins,)``."""
        return self._data["count"].cpu().numpy().copy()

    @property
    def n(self) -> int:
        """Total number of configurations."""
        return int(self._data["count"].sum())

    def estimate(self) -> dict:
        """Ensemble estimates ``{name: (value, err)}`` (jackknife over non-empty bins).

        Scalars (floats): ``m, abs_m, m2, m4, chi, chi_conn, binder, xi2, m_R, lambda_R, Z``
        (formulas in :mod:`rgdist.measure.observables`) and ``mean_max_abs`` (<max_x|phi_x|>).
        ``g2``: (value, err) arrays of shape ``lattice.shape`` (fftn order).
        ``max_abs``: (largest |phi_x| seen, nan) -- an extreme value has no jackknife error.
        ``value`` is the full-sample estimate; ``err`` is nan with fewer than 2 non-empty
        bins and wherever a replica is ill-defined (e.g. xi2^2 <= 0 in some replica).
        """
        if self.n == 0:
            raise ValueError("estimate() needs at least one configuration (the accumulator is empty)")
        data = self.to_arrays()
        sums = {"m": data["sum_m"], "abs_m": data["sum_abs_m"], "m2": data["sum_m2"],
                "m4": data["sum_m4"], "g2": data["sum_g2"], "mean_max_abs": data["sum_max_abs"]}
        lattice = self.lattice

        def derived(means):
            out = obs.ensemble_observables(means, lattice)
            out["mean_max_abs"] = means["mean_max_abs"]
            return out

        result = jackknife(derived, sums, data["count"])
        result["max_abs"] = (float(data["max_abs"].max()), float("nan"))
        return result
