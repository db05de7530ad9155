"""Finite-size-scaling analysis on synthetic scans with a known critical point.

Synthetic Binder data follow exact one-parameter scaling U_N(m2) = f((m2 - m2c) N^{1/nu})
with nu = 1 and f(x) = (2/3) / (1 + exp(k x - c)): f -> 2/3 deep in the broken phase, -> 0
in the symmetric phase, f(0) = U* (c chosen so), so all sizes cross exactly at (m2c, U*).
Gaussian noise of known dU is added; recovered values must lie within 3 of their own
stated errors, and the bootstrap errors must agree with the spread over repetitions within
bounds set by the number of repetitions.
"""
import math

import numpy as np
import pytest

from rgdist.analysis import (
    BINDER_STAR,
    Table,
    binder_crossing,
    critical_point,
    crossings,
    curve_peak,
    fit_power_law,
    phase_diagram,
    susceptibility_peaks,
    write_phase_diagram_csv,
)

M2C = -1.29
LAM = 1.0
K = 1.2
C = -math.log((2 / 3) / BINDER_STAR - 1)  # f(0) = U*
GRID = np.linspace(-1.45, -1.15, 13)
SIZES = (8, 16, 32)


def scaling_u(x):
    return (2 / 3) / (1 + np.exp(K * x - C))


def binder_rows(rng, dU, m2c=M2C, lam=LAM, grid=GRID, sizes=SIZES, correction=0.0, source="hmc"):
    """Rows of a synthetic scan: U_N = f((m2 - m2c) N + correction / N) + noise.

    The correction to scaling moves the (N, 2N) crossing to m2c + correction / (2 N^2)."""
    rows = []
    for N in sizes:
        u = scaling_u((grid - m2c) * N + correction / N) + dU * rng.standard_normal(len(grid))
        for m2, val in zip(grid, u):
            rows.append({"N": N, "lam": lam, "m2": float(m2), "source": source,
                         "binder": (float(val), dU)})
    return rows


def ratio_bounds(n_rep, z=3.5, width="std"):
    """Band for (mean stated error) / (spread over n_rep repetitions).

    ``width="std"``: the sample std of n Gaussian values has relative standard deviation
    1/sqrt(2(n - 1)).  ``width="hw68"``: the half width of the central 68 % interval of n
    Gaussian values, (q84 - q16)/2, has variance (2 p(1-p) - 2 p'^2) / (4 n f^2) with
    p = 0.8413, p' = 0.1587, f = phi(1)/sigma, i.e. relative sd 0.962/sqrt(n).
    """
    s = 1 / math.sqrt(2 * (n_rep - 1)) if width == "std" else 0.962 / math.sqrt(n_rep)
    return 1 - z * s, 1 + z * s


def half_width_68(x):
    lo, hi = np.quantile(x, [0.158655, 0.841345])
    return (hi - lo) / 2


# ----------------------------------------------------------------------------- table
def test_table_rows_csv_roundtrip_and_grouping(tmp_path):
    rows = [
        {"N": 8, "lam": 0.5, "m2": 0.1 + 0.2, "source": "hmc", "binder": (0.61, 0.01),
         "chi": 12.5, "chi_err": 0.25, "n_samples": 4096},
        {"N": 16, "lam": 0.5, "m2": -1.0 / 3.0, "source": "hmc", "xi2": 14.0, "xi2_err": 0.5},
        {"N": 8, "lam": 1.0, "m2": -1.29, "source": "hmc", "binder": 0.5, "binder_err": 0.02},
    ]
    t = Table.from_rows(rows)
    assert len(t) == 3
    assert math.isnan(t.column("binder")[1]) and math.isnan(t.column("Z")[0])  # missing -> nan
    path = t.to_csv(tmp_path / "agg.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:6] == ["N", "lam", "m2", "source", "binder", "binder_err"]
    assert "n_samples" in header
    back = Table.from_csv(path)
    for col in t.columns:
        a, b = t.column(col), back.column(col)
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)  # repr precision: bit-exact round trip
        else:
            assert list(a) == list(b)
    assert back.column("m2")[0] == 0.1 + 0.2
    groups = t.groupby_lam()
    assert list(groups) == [0.5, 1.0]
    assert len(groups[0.5]) == 2 and list(groups[0.5].sizes()) == [8, 16]
    m2, xi_n, err = t.curve(16, 0.5, "xi_over_N")
    assert xi_n[0] == pytest.approx(14.0 / 16) and err[0] == pytest.approx(0.5 / 16)


def test_table_bad_input():
    with pytest.raises(ValueError, match="source"):
        Table.from_rows([{"N": 8, "lam": 1.0, "m2": 0.0, "source": "mcmc"}])
    with pytest.raises(ValueError, match="N must be"):
        Table.from_rows([{"N": 1, "lam": 1.0, "m2": 0.0, "source": "hmc"}])
    with pytest.raises(ValueError, match="lam"):
        Table.from_rows([{"N": 8, "lam": -1.0, "m2": 0.0, "source": "hmc"}])
    with pytest.raises(ValueError, match="m2"):
        Table.from_rows([{"N": 8, "lam": 1.0, "source": "hmc"}])
    with pytest.raises(ValueError, match="binder_err"):
        Table.from_rows([{"N": 8, "lam": 1.0, "m2": 0.0, "source": "hmc", "binder": 0.5,
                          "binder_err": -0.1}])
    mixed = Table.from_rows([{"N": 8, "lam": 1.0, "m2": 0.0, "source": s} for s in ("hmc", "diffusion")])
    with pytest.raises(ValueError, match="source"):
        crossings(mixed, 1.0)
    dup = Table.from_rows([{"N": 8, "lam": 1.0, "m2": 0.0, "source": "hmc", "binder": 0.5}] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        dup.curve(8, 1.0, "binder")
    with pytest.raises(ValueError, match="observable"):
        dup.curve(8, 1.0, "magnetisation")


# ----------------------------------------------------------------------------- crossings
@pytest.mark.parametrize("seed", range(5))
def test_binder_crossing_recovers_known_crossing(seed):
    rng = np.random.default_rng(seed)
    table = Table.from_rows(binder_rows(rng, dU=0.003))
    pairs = crossings(table, LAM, n_boot=400, seed=seed)
    assert [(p.N_a, p.N_b) for p in pairs] == [(8, 16), (16, 32)]
    for p in pairs:
        c = p.crossing
        assert c.ok, c.reason
        assert 0 < c.dm2 < 0.05 and 0 < c.dU < 0.05
        assert abs(c.m2 - M2C) < 3 * c.dm2, (p.N_a, p.N_b, c)
        assert abs(c.U - BINDER_STAR) < 3 * c.dU, (p.N_a, p.N_b, c)
        assert c.n_failed <= 0.05 * 400
        assert c.chi2_dof < 6  # the local quadratic describes the curves


@pytest.mark.parametrize("method", ["poly", "linear"])
def test_bootstrap_error_matches_spread_over_repetitions(method):
    """The stated errors are 68 % half widths of the bootstrap distribution (the crossing is a
    ratio of noisy differences, with wider-than-Gaussian tails), so they are compared with the
    68 % half width of the repetitions."""
    n_rep, dU = 120, 0.003
    grid = np.linspace(-1.45, -1.15, 25) if method == "linear" else GRID
    est, err, u_est, u_err = [], [], [], []
    for rep in range(n_rep):
        rng = np.random.default_rng(1000 + rep)
        ua = scaling_u((grid - M2C) * 16) + dU * rng.standard_normal(len(grid))
        ub = scaling_u((grid - M2C) * 32) + dU * rng.standard_normal(len(grid))
        e = np.full(len(grid), dU)
        c = binder_crossing(grid, ua, e, grid, ub, e, rng=rep, n_boot=300, method=method)
        assert c.ok, c.reason
        est.append(c.m2), err.append(c.dm2), u_est.append(c.U), u_err.append(c.dU)
    est, u_est = np.array(est), np.array(u_est)
    lo, hi = ratio_bounds(n_rep, width="hw68")
    for x, dx, truth in ((est, err, M2C), (u_est, u_err, BINDER_STAR)):
        ratio = np.mean(dx) / half_width_68(x)
        assert lo < ratio < hi, (method, ratio, lo, hi)
        spread = np.std(x, ddof=1)
        # no bias beyond the statistical resolution of the repetitions
        assert abs(np.mean(x) - truth) < 4 * spread / math.sqrt(n_rep), (method, np.mean(x) - truth, spread)


def test_crossing_absent_in_window_gives_reason_not_exception():
    x = np.linspace(-1.4, -1.2, 7)
    ua = scaling_u((x - M2C) * 8)
    e = np.full(7, 0.003)
    c = binder_crossing(x, ua, e, x, ua + 0.1, e, rng=0, n_boot=50)  # parallel curves
    assert not c.ok and math.isnan(c.m2) and math.isnan(c.dm2) and math.isnan(c.U)
    assert "no crossing" in c.reason
    # a crossing outside the scanned window (window entirely in the broken phase)
    xw = np.linspace(-2.0, -1.6, 5)
    c = binder_crossing(xw, scaling_u((xw - M2C) * 8), np.full(5, 1e-4),
                        xw, scaling_u((xw - M2C) * 16), np.full(5, 1e-4), rng=0, n_boot=50)
    assert not c.ok and "no crossing" in c.reason
    c = binder_crossing(x, ua, e, x + 1.0, ua, e, rng=0)
    assert not c.ok and "overlap" in c.reason
    # the same through the table API: nan critical point with the pair's reason
    table = Table.from_rows(binder_rows(np.random.default_rng(0), 1e-4, grid=xw, sizes=(8, 16)))
    cp = critical_point(table, LAM, n_boot=50)
    assert not cp.ok and math.isnan(cp.m2_c) and "8-16" in cp.reason
    single = Table.from_rows(binder_rows(np.random.default_rng(0), 1e-3, sizes=(8,)))
    cp = critical_point(single, LAM, n_boot=50)
    assert not cp.ok and "fewer than 2 sizes" in cp.reason


def test_binder_crossing_bad_input():
    x = np.linspace(-1.4, -1.2, 5)
    u, e = scaling_u((x - M2C) * 8), np.full(5, 0.01)
    with pytest.raises(ValueError, match="method"):
        binder_crossing(x, u, e, x, u, e, rng=0, method="spline")
    with pytest.raises(ValueError, match="dU_b"):
        binder_crossing(x, u, e, x, u, 0 * e, rng=0)
    with pytest.raises(ValueError, match="equal length"):
        binder_crossing(x, u[:-1], e, x, u, e, rng=0)
    with pytest.raises(ValueError, match="rng"):
        binder_crossing(x, u, e, x, u, e, rng="seed")
    with pytest.raises(ValueError, match="n_fit"):
        binder_crossing(x, u, e, x, u, e, rng=0, degree=2, n_fit=2)
    with pytest.raises(ValueError, match="n_boot"):
        binder_crossing(x, u, e, x, u, e, rng=0, n_boot=-1)


def test_bootstrap_is_reproducible_with_fixed_seed():
    rng = np.random.default_rng(3)
    table = Table.from_rows(binder_rows(rng, dU=0.003))
    a = critical_point(table, LAM, n_boot=200, seed=11)
    b = critical_point(table, LAM, n_boot=200, seed=11)
    assert a.m2_c == b.m2_c and a.dm2 == b.dm2


def test_xi_over_N_crossing():
    # xi2/N = g((m2 - m2c) N) with g(0) = 0.905, decreasing; errors 1 %
    rng = np.random.default_rng(5)
    rows = []
    for N in SIZES:
        g = 0.905 - 0.3 * np.tanh(0.5 * (GRID - M2C) * N)
        xi = N * g * (1 + 0.01 * rng.standard_normal(len(GRID)))
        for m2, v, gv in zip(GRID, xi, g):
            rows.append({"N": N, "lam": LAM, "m2": float(m2), "source": "hmc",
                         "xi2": float(v), "xi2_err": float(0.01 * N * gv)})
    pairs = crossings(Table.from_rows(rows), LAM, "xi_over_N", n_boot=300)
    for p in pairs:
        c = p.crossing
        assert c.ok and abs(c.m2 - M2C) < 3 * c.dm2 and abs(c.U - 0.905) < 3 * c.dU, c


# ----------------------------------------------------------------------------- critical point
def test_critical_point_largest_pair_bound_covers_drift():
    """A correction to scaling x -> x + b/N moves the (N, 2N) crossing by b/(2 N^2); the
    largest-pair estimate with its drift systematic must still cover m2c."""
    rng = np.random.default_rng(7)
    grid = np.linspace(-1.45, -1.15, 31)
    b = -2.0
    table = Table.from_rows(binder_rows(rng, 2e-4, grid=grid, correction=b))
    cp = critical_point(table, LAM, n_boot=300)
    assert cp.ok and cp.note == ""
    # the drift is as predicted
    for p in cp.pairs:
        assert abs(p.crossing.m2 - M2C - b / (2 * p.N_a**2)) < 4 * p.crossing.dm2, p
    x_small, x_large = (p.crossing.m2 for p in cp.pairs)
    assert cp.m2_c == x_large and cp.dm2_sys == pytest.approx(abs(x_large - x_small))
    assert abs(cp.m2_c - M2C) > 3 * cp.dm2_stat  # the statistical error alone misses it
    assert abs(cp.m2_c - M2C) < cp.dm2_sys + 3 * cp.dm2_stat
    assert cp.dm2 == pytest.approx(math.hypot(cp.dm2_stat, cp.dm2_sys))


def test_phase_diagram_two_lams(tmp_path):
    rng = np.random.default_rng(9)
    truth = {0.5: -0.95, 1.0: M2C}
    rows = []
    for lam, m2c in truth.items():
        rows += binder_rows(rng, 0.003, m2c=m2c, lam=lam, grid=GRID + (m2c - M2C))
    table = Table.from_rows(rows)
    for method in ("largest", "weighted"):
        points = phase_diagram(table, method=method, n_boot=300)
        assert [p.lam for p in points] == [0.5, 1.0]
        for p in points:
            assert p.ok and p.method == method
            assert abs(p.m2_c - truth[p.lam]) < 3 * p.dm2, p
            assert abs(p.value - BINDER_STAR) < 3 * p.dvalue, p
    path = write_phase_diagram_csv(points, tmp_path / "critical_line.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("lam,m2_c,dm2") and len(lines) == 3


# ----------------------------------------------------------------------------- peaks
def chi_rows(rng, rel_err, gamma_over_nu=1.75, sizes=(8, 16, 32, 64), amp=0.05, w=1.5):
    """chi_conn_N(m2) = amp N^{g/nu} exp(-x^2 / 2w^2), x = (m2 - m2p(N)) N, m2p = m2c - 0.5/N.

    Each N has its own grid, uniform in the scaling variable (spacing 0.5 w in x) with an
    N-dependent offset, so the three points around the peak resolve it equally for all N."""
    rows = []
    for N in sizes:
        m2p = M2C - 0.5 / N
        x = (np.arange(-6, 7) + 0.37 * math.sin(N)) * 0.5 * w
        m2 = m2p + x / N
        chi = amp * N**gamma_over_nu * np.exp(-x**2 / (2 * w * w))
        noisy = chi * (1 + rel_err * rng.standard_normal(len(x)))
        for a, b, s in zip(m2, noisy, chi):
            rows.append({"N": N, "lam": LAM, "m2": float(a), "source": "diffusion",
                         "chi_conn": float(b), "chi_conn_err": float(rel_err * s)})
    return rows


@pytest.mark.parametrize("seed", range(4))
def test_gamma_over_nu_from_susceptibility_peaks(seed):
    table = Table.from_rows(chi_rows(np.random.default_rng(seed), 0.01))
    res = susceptibility_peaks(table, LAM, n_boot=400, seed=seed)
    assert res.reason == "" and res.dof == 2
    assert all(p.ok for p in res.peaks)
    assert 0 < res.dgamma_over_nu < 0.05
    assert abs(res.gamma_over_nu - 1.75) < 3 * res.dgamma_over_nu, res
    for p in res.peaks:  # peak positions m2p(N) = m2c - 0.5/N
        assert abs(p.m2 - (M2C - 0.5 / p.N)) < 4 * p.dm2


def test_gamma_over_nu_error_matches_spread():
    n_rep = 60
    est, err = [], []
    for rep in range(n_rep):
        table = Table.from_rows(chi_rows(np.random.default_rng(500 + rep), 0.01))
        res = susceptibility_peaks(table, LAM, n_boot=300, seed=rep)
        est.append(res.gamma_over_nu), err.append(res.dgamma_over_nu)
    spread = np.std(est, ddof=1)
    lo, hi = ratio_bounds(n_rep)
    assert lo < np.mean(err) / spread < hi, (np.mean(err), spread)
    assert abs(np.mean(est) - 1.75) < 4 * spread / math.sqrt(n_rep)


def test_power_law_fit_exact_and_peak_edge_cases():
    N = np.array([8, 16, 32])
    p, dp, c, dc, chi2, dof = fit_power_law(N, 3.0 * N**1.75, 0.01 * 3.0 * N**1.75)
    assert p == pytest.approx(1.75, abs=1e-12) and c == pytest.approx(math.log(3.0))
    assert chi2 == pytest.approx(0, abs=1e-18) and dof == 1
    # dp from the normal equations: equal weights w = 1e4 -> dp = 1/sqrt(w S_xx)
    lx = np.log(N)
    assert dp == pytest.approx(1 / math.sqrt(1e4 * np.sum((lx - lx.mean()) ** 2)))
    with pytest.raises(ValueError, match=">= 2 sizes"):
        fit_power_law([8], [1.0], [0.1])
    # maximum at the window edge: clean reason, no exception
    x = np.linspace(0, 1, 6)
    pk = curve_peak(x, x, np.full(6, 0.01), rng=0, n_boot=50)
    assert not pk.ok and "edge" in pk.reason
    # exact parabola: vertex recovered exactly
    y = 2.0 - 3.0 * (x - 0.47) ** 2
    pk = curve_peak(x, y, np.full(6, 1e-3), rng=0, n_boot=200)
    assert pk.ok and pk.m2 == pytest.approx(0.47) and pk.height == pytest.approx(2.0)
    table = Table.from_rows([{"N": 8, "lam": 1.0, "m2": float(a), "source": "hmc",
                              "chi_conn": float(b), "chi_conn_err": 0.01} for a, b in zip(x, x)])
    res = susceptibility_peaks(table, 1.0, n_boot=50)
    assert math.isnan(res.gamma_over_nu) and "2 sizes" in res.reason
