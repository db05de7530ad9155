"""The critical line m2_c(lam) from the crossings of successive sizes, and the 2D Ising
universality values it is compared with.

2D Ising universality (SPEC section 7): nu = 1, gamma/nu = 7/4; at criticality on a periodic
square torus U -> U* ~ 0.6107 and xi2/N -> ~0.905.

Published anchors of the critical line (SPEC section 8), for the action
S = sum_x [1/2 sum_mu (phi_{x+mu} - phi_x)^2 + 1/2 m2 phi_x^2 + lam/4 phi_x^4]:

- lattice, lam = 1: m2_c = -1.2725 (infinite volume), :data:`LATTICE_M2C`;
- continuum: the ratio f = lam / mu2 of the normal-ordered mass mu2 = m2 + 3 lam A(mu2) is
  f_c = 11.11 at the critical point, so to leading order

      m2_c(lam) = mu2_c - 3 lam A(mu2_c),   mu2_c = lam / f_c,

  with A(mu2) = int_{[-pi, pi]^2} d^2k / (2 pi)^2  1 / (khat^2 + mu2) the lattice tadpole
  (khat^2 = sum_mu 4 sin^2(k_mu / 2)), :func:`continuum_critical_m2`. A is computed exactly
  (not by its small-mu2 form (1/4 pi) ln(32 / mu2)): one momentum integral in closed form, the
  other a periodic sum that converges like exp(-mu L) (:func:`lattice_tadpole`). At lam = 1 this gives -1.2993, 2.1% below
  the lattice value (the small-mu2 form of A would give -1.3122): the formula is leading
  order in lam, good to a few % at lam = 1.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from rgdist.analysis.crossings import PairCrossing, crossings
from rgdist.analysis.table import Table, write_rows_csv

CRITICAL_METHODS = ("largest", "weighted")

# 2D Ising universality (SPEC section 7); U* and xi2/N on a periodic square torus
NU_ISING = 1.0
GAMMA_OVER_NU_ISING = 7 / 4
BINDER_STAR = 0.6107
XI_OVER_N_STAR = 0.905

#: m2_c at lam = 1 in infinite volume (lattice, SPEC section 8)
LATTICE_M2C = {1.0: -1.2725}
#: the continuum critical ratio f_c = lam / mu2_c (SPEC section 8)
F_C = 11.11


ANCHOR_COLUMNS = ("m2_c_lo", "m2_c_ref", "z_ref")


def anchors(lam: float, m2_c: float, dm2: float) -> dict:
    """The anchors at lam next to a measured m2_c +- dm2: the leading-order continuum value
    ``m2_c_lo``, the lattice reference ``m2_c_ref`` (nan where none is known) and the pull
    ``z_ref = (m2_c - m2_c_ref) / dm2`` (nan without a reference or a finite error)."""
    lo = continuum_critical_m2(lam) if math.isfinite(lam) and lam > 0 else math.nan
    ref = next((v for k, v in LATTICE_M2C.items() if abs(k - lam) < 1e-12), math.nan)
    ok = math.isfinite(ref) and math.isfinite(m2_c) and math.isfinite(dm2) and dm2 > 0
    return {"m2_c_lo": lo, "m2_c_ref": ref, "z_ref": (m2_c - ref) / dm2 if ok else math.nan}


def lattice_tadpole(mu2: float, d: int = 2) -> float:
    """A(mu2) = int d^2k/(2 pi)^2 1/(khat^2 + mu2) over the Brillouin zone (d = 2).

    The k_2 integral is done in closed form, int dk/(2 pi) 1/(b - 2 cos k) = 1/sqrt(b^2 - 4)
    (b > 2), leaving A = int dk/(2 pi) 1/sqrt(b(k)^2 - 4) with b = 2 + 4 sin^2(k/2) + mu2: a
    periodic function analytic in a strip of width ~ mu, so the mean over L >= 60/mu equally
    spaced k converges to the integral like exp(-mu L) (< 1e-26)."""
    if not (math.isfinite(mu2) and mu2 > 0):
        raise ValueError(f"mu2 must be finite and > 0, got {mu2!r}")
    if d != 2:
        raise ValueError(f"only d = 2 is implemented, got d = {d}")
    L = max(64, math.ceil(60.0 / math.sqrt(mu2)))
    b = 2 + 4 * np.sin(np.pi * np.arange(L) / L) ** 2 + mu2
    return float(np.mean(1.0 / np.sqrt((b - 2) * (b + 2))))


def continuum_critical_m2(lam: float, f_c: float = F_C) -> float:
    """Leading-order critical bare mass m2_c(lam) = lam/f_c - 3 lam A(lam/f_c) (module
    docstring)."""
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be finite and > 0, got {lam!r}")
    mu2 = lam / f_c
    return mu2 - 3 * lam * lattice_tadpole(mu2)


class CriticalPoint(NamedTuple):
    """m2_c(lam) from crossings.

    dm2 = sqrt(dm2_stat^2 + dm2_sys^2) (dm2_sys counted as 0 when nan); U/dU: the crossing
    value of the observable; ``note`` records fallbacks; ``reason`` is "" on success.
    """

    lam: float
    m2_c: float
    dm2: float
    dm2_stat: float
    dm2_sys: float
    value: float
    dvalue: float
    observable: str
    method: str
    pairs: tuple[PairCrossing, ...]
    reason: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == "" and math.isfinite(self.m2_c)

    def as_row(self) -> dict:
        return {"lam": self.lam, "m2_c": self.m2_c, "dm2": self.dm2, "dm2_stat": self.dm2_stat,
                "dm2_sys": self.dm2_sys, "value": self.value, "dvalue": self.dvalue,
                "observable": self.observable, "method": self.method,
                "pairs": " ".join(f"{p.N_a}-{p.N_b}" for p in self.pairs if p.crossing.ok),
                "reason": self.reason, "note": self.note}


CRITICAL_COLUMNS = ("lam", "m2_c", "dm2", "dm2_stat", "dm2_sys", "value", "dvalue",
                    "observable", "method", "pairs", "reason", "note")


def critical_point(table: Table, lam: float, *, observable: str = "binder",
                   method: str = "largest", source: str | None = None, n_boot: int = 1000,
                   seed: int = 0, crossing_method: str = "poly", degree: int = 2,
                   n_fit: int | None = None) -> CriticalPoint:
    """m2_c(lam) from the crossings of successive sizes.

    Crossings of (N, N') drift to m2_c like N^{-(1/nu + omega)} (omega > 0 the leading
    correction exponent), so:

    - ``method="largest"`` (default): m2_c is the crossing of the two largest sizes with a
      crossing; dm2_stat its bootstrap error; dm2_sys = |x_last - x_prev|, the drift between
      the last two pair crossings.  For size ratio 2 and nu = 1 the remaining drift beyond
      the last pair is sum_k r^k |x_last - x_prev| with r = 2^{-(1 + omega)} < 1/2, i.e.
      below |x_last - x_prev|: a conservative bound.  nan with one pair only (see ``note``).
    - ``method="weighted"``: inverse-variance weighted mean of all pair crossings;
      dm2_stat = (sum w)^{-1/2}; dm2_sys = the weighted standard deviation of the
      crossings about the mean (their spread, which the mean hides).
    """
    if method not in CRITICAL_METHODS:
        raise ValueError(f"method must be one of {CRITICAL_METHODS}, got {method!r}")
    pairs = tuple(crossings(table, lam, observable, source=source, n_boot=n_boot, seed=seed,
                            method=crossing_method, degree=degree, n_fit=n_fit))
    good = [p for p in pairs if p.crossing.ok]
    nan = math.nan

    def result(m2, stat, sys, val, dval, reason="", note=""):
        total = math.hypot(stat, sys if math.isfinite(sys) else 0.0)
        return CriticalPoint(float(lam), m2, total, stat, sys, val, dval, observable, method,
                             pairs, reason, note)

    if not good:
        why = "; ".join(f"{p.N_a}-{p.N_b}: {p.crossing.reason}" for p in pairs) or "fewer than 2 sizes"
        return result(nan, nan, nan, nan, nan, reason=f"no crossing found ({why})")
    if method == "largest":
        last = good[-1]
        note = ""
        if (last.N_a, last.N_b) != (pairs[-1].N_a, pairs[-1].N_b):
            note = f"largest pair {pairs[-1].N_a}-{pairs[-1].N_b} has no crossing; used {last.N_a}-{last.N_b}"
        if len(good) >= 2:
            sys = abs(last.crossing.m2 - good[-2].crossing.m2)
        else:
            sys = nan
            note = (note + "; " if note else "") + "one pair only: no systematic drift estimate"
        c = last.crossing
        return result(c.m2, c.dm2, sys, c.U, c.dU, note=note)
    usable = [p for p in good if math.isfinite(p.crossing.dm2) and p.crossing.dm2 > 0]
    if not usable:
        return result(nan, nan, nan, nan, nan, reason="no crossing with a finite error")
    x = np.array([p.crossing.m2 for p in usable])
    w = 1.0 / np.array([p.crossing.dm2 for p in usable]) ** 2
    u = np.array([p.crossing.U for p in usable])
    du = np.array([p.crossing.dU for p in usable])
    mean = float(np.sum(w * x) / np.sum(w))
    stat = float(1 / math.sqrt(np.sum(w)))
    sys = float(math.sqrt(np.sum(w * (x - mean) ** 2) / np.sum(w))) if len(x) > 1 else nan
    wu = 1.0 / np.where(du > 0, du, np.inf) ** 2
    val = float(np.sum(wu * u) / np.sum(wu)) if np.sum(wu) > 0 else float(np.mean(u))
    dval = float(1 / math.sqrt(np.sum(wu))) if np.sum(wu) > 0 else nan
    note = "" if len(x) > 1 else "one pair only: no spread estimate"
    return result(mean, stat, sys, val, dval, note=note)


def phase_diagram(table: Table, **kwargs) -> list[CriticalPoint]:
    """The critical line: :func:`critical_point` for every lam of the table, lam ascending.

    Keyword arguments are passed on to :func:`critical_point`.
    """
    return [critical_point(table, lam, **kwargs) for lam in table.lams()]


def write_phase_diagram_csv(points: Sequence[CriticalPoint], path) -> Path:
    """Write the critical line (one row per lam) with a header."""
    return write_rows_csv([p.as_row() for p in points], path, CRITICAL_COLUMNS)
