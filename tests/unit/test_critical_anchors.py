"""The anchors of the critical line: the lattice tadpole A(mu2) and the leading-order
continuum critical line m2_c(lam) = lam/f_c - 3 lam A(lam/f_c) (rgdist.analysis.critical)."""
from __future__ import annotations

import math

import pytest

from rgdist.analysis.critical import (F_C, LATTICE_M2C, continuum_critical_m2,
                                      lattice_tadpole)


def test_tadpole_large_mass_series():
    """A = <1/(khat^2 + mu2)> = sum_n (-1)^n <khat^{2n}> / mu2^{n+1} with the Brillouin-zone
    moments <khat^2> = 4, <khat^4> = 20, <khat^6> = 112 (from <s^n> = 2, 6, 20 of
    s = 2 - 2 cos k per direction); at mu2 = 100 the next term is ~ <khat^8>/mu2^5 < 1e-7."""
    mu2 = 100.0
    series = 1 / mu2 - 4 / mu2 ** 2 + 20 / mu2 ** 3 - 112 / mu2 ** 4
    assert abs(lattice_tadpole(mu2) - series) < 1e-7


def test_tadpole_small_mass_is_the_log():
    """For small mu2, A -> (1/4 pi) ln(32/mu2) + O(mu2 ln mu2): at mu2 = 1e-4 the two agree
    to < 1e-3 and the difference shrinks with mu2."""
    d = [abs(lattice_tadpole(m) - math.log(32 / m) / (4 * math.pi)) for m in (1e-2, 1e-4)]
    assert d[1] < 1e-3 and d[1] < d[0]


def test_tadpole_equals_the_two_dimensional_lattice_sum():
    """The closed-form-in-k_2 tadpole equals the plain 2D sum (1/L^2) sum_k 1/(khat^2 + mu2)
    on an L x L torus with mu L = 60 (itself converged like exp(-mu L) < 1e-26), to rounding
    of a mean of ~1e5 terms (1e-13 relative); a wrong inner integral (e.g. 1/(b - 2)) fails."""
    import numpy as np

    for mu2 in (0.09, 0.5, 3.0):
        L = 2 * math.ceil(30.0 / math.sqrt(mu2))
        s = 4 * np.sin(np.pi * np.arange(L) / L) ** 2
        direct = float(np.mean(1.0 / (s[:, None] + s[None, :] + mu2)))
        assert lattice_tadpole(mu2) == pytest.approx(direct, rel=1e-13)


def test_tadpole_checks_input():
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="mu2"):
            lattice_tadpole(bad)
    with pytest.raises(ValueError, match="lam"):
        continuum_critical_m2(0.0)


def test_leading_order_line_is_within_a_few_percent_of_the_lattice_point():
    """The leading-order line at lam = 1 lies within 3% of the lattice m2_c = -1.2725 and
    below it; it decreases monotonically in lam."""
    m = continuum_critical_m2(1.0)
    assert abs(m / LATTICE_M2C[1.0] - 1) < 0.03 and m < LATTICE_M2C[1.0]
    line = [continuum_critical_m2(lam) for lam in (0.25, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(line, line[1:]))
    assert F_C == 11.11
