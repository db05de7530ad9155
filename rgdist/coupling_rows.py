"""The region of couplings a grid model is trained on, as rows of constant lam (torch-free).

A grid of training couplings (m2, lam) is read as rows: for every distinct lam (ascending) the
sorted distinct m2 of that lam. A product grid has the same m2 in every row; a phase-diagram
grid follows the critical line, so every lam has its own m2 interval [lo(lam_j), hi(lam_j)].
The region the grid covers is the ruled surface between consecutive rows: for lam between
lam_j and lam_{j+1} (b = (lam - lam_j) / (lam_{j+1} - lam_j)),

    lo(lam) = (1 - b) lo_j + b lo_{j+1},   hi(lam) = (1 - b) hi_j + b hi_{j+1},

and (m2, lam) is inside when lo(lam) <= m2 <= hi(lam). For a product grid that is the box
[m2_min, m2_max] x [lam_min, lam_max]. The coordinate u = (m2 - lo(lam)) / (hi(lam) - lo(lam))
in [0, 1] is what rgdist.models.conditioning.SpectrumTable interpolates along.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CouplingRows"]

_TOL = 1e-12


class CouplingRows:
    """Rows of constant lam of a set of (m2, lam) couplings, and the region between them."""

    def __init__(self, couplings):
        c = np.asarray(couplings, dtype=np.float64).reshape(-1, 2)
        if c.shape[0] < 1 or not np.all(np.isfinite(c)):
            raise ValueError("couplings must hold at least one finite (m2, lam)")
        self.lams = np.unique(c[:, 1])
        self.m2s = [np.unique(c[c[:, 1] == lam, 0]) for lam in self.lams]
        self.is_product = all(r.size == self.m2s[0].size and np.array_equal(r, self.m2s[0])
                              for r in self.m2s)

    def bracket(self, lam: float) -> tuple[int, int, float]:
        """(j, j + 1, b): the rows around lam and the weight of row j + 1 (clipped rows, so
        b < 0 or > 1 outside the lam range, a linear extrapolation)."""
        if self.lams.size == 1:
            return 0, 0, 0.0
        j = int(np.clip(np.searchsorted(self.lams, lam) - 1, 0, self.lams.size - 2))
        return j, j + 1, float((lam - self.lams[j]) / (self.lams[j + 1] - self.lams[j]))

    def bounds(self, lam: float) -> tuple[float, float]:
        """(lo(lam), hi(lam)): the m2 interval of the region at lam."""
        j0, j1, b = self.bracket(lam)
        lo = (1 - b) * self.m2s[j0][0] + b * self.m2s[j1][0]
        hi = (1 - b) * self.m2s[j0][-1] + b * self.m2s[j1][-1]
        return float(lo), float(hi)

    def contains(self, m2: float, lam: float, tol: float = _TOL) -> bool:
        if not self.lams[0] - tol <= lam <= self.lams[-1] + tol:
            return False
        lo, hi = self.bounds(lam)
        return lo - tol <= m2 <= hi + tol

    def describe(self) -> str:
        """The region in words, for error messages."""
        if self.is_product:
            return (f"m2 in [{self.m2s[0][0]:g}, {self.m2s[0][-1]:g}], lam in "
                    f"[{self.lams[0]:g}, {self.lams[-1]:g}]")
        rows = "; ".join(f"lam = {lam:g}: m2 in [{r[0]:g}, {r[-1]:g}]"
                         for lam, r in zip(self.lams, self.m2s))
        return f"rows {rows} (linear in lam between rows)"

    def check(self, m2: float, lam: float, allow_outside: bool = False) -> None:
        """ValueError naming the region when (m2, lam) lies outside it (unless allowed)."""
        if not allow_outside and not self.contains(m2, lam):
            raise ValueError(f"coupling (m2={m2:g}, lam={lam:g}) lies outside the trained "
                             f"window: {self.describe()}")
