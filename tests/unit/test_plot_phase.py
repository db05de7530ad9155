"""Phase-diagram and FSS figures: files written (PNG and PDF), axes labelled, data drawn."""
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from rgdist.analysis import Table, crossings, phase_diagram  # noqa: E402
from rgdist.plot import (  # noqa: E402
    plot_binder,
    plot_chi_collapse,
    plot_phase_diagram,
    plot_xi_over_N,
    save_figure,
)

M2C = {0.5: -0.95, 1.0: -1.29}
SIZES = (8, 16, 32)


def synthetic_table(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for lam, m2c in M2C.items():
        grid = np.linspace(m2c - 0.16, m2c + 0.14, 11)
        for N in SIZES:
            x = (grid - m2c) * N
            u = (2 / 3) / (1 + np.exp(1.2 * x - 2.39)) + 0.003 * rng.standard_normal(len(x))
            xi = N * (0.905 - 0.3 * np.tanh(0.5 * x))
            chi = 0.1 * N**1.75 * np.exp(-x**2 / 4)
            for k, m2 in enumerate(grid):
                rows.append({"N": N, "lam": lam, "m2": float(m2), "source": "hmc",
                             "binder": (float(u[k]), 0.003), "xi2": (float(xi[k]), 0.01 * N),
                             "chi": (float(chi[k]), 0.02 * chi[k]),
                             "chi_conn": (float(0.5 * chi[k]), 0.01 * chi[k])})
    return Table.from_rows(rows)


def _check_files(paths):
    png, pdf = paths
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_binder_xi_and_collapse_figures(tmp_path):
    table = synthetic_table()
    pairs = crossings(table, 1.0, n_boot=100)
    fig = plot_binder(table, 1.0, crossings=pairs)
    ax = fig.axes[0]
    assert "m^2" in ax.get_xlabel() and "lattice units" in ax.get_xlabel()
    assert "Binder" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all(f"N = {N}" in labels for N in SIZES)
    assert sum("crossing" in s for s in labels) == 2
    assert any("0.6107" in s for s in labels)
    _check_files(save_figure(fig, tmp_path / "figs" / "binder_lam1.0"))

    fig = plot_xi_over_N(table, 1.0)
    assert "xi_2 / N" in fig.axes[0].get_ylabel()
    _check_files(save_figure(fig, tmp_path / "xi"))

    fig = plot_chi_collapse(table, 1.0)
    assert "7/4" in fig.axes[0].get_ylabel() and "m^2" in fig.axes[0].get_xlabel()
    # with m2_c the x axis is the scaling variable and the synthetic curves collapse
    fig = plot_chi_collapse(table, 1.0, m2_c=M2C[1.0])
    ax = fig.axes[0]
    assert "N^{1/\\nu}" in ax.get_xlabel()
    lines = [c for c in ax.containers]
    assert len(lines) == len(SIZES)
    peaks = [np.max(c.lines[0].get_ydata()) for c in lines]
    np.testing.assert_allclose(peaks, 0.1, rtol=0.05)  # chi / N^{7/4} peaks coincide
    _check_files(save_figure(fig, tmp_path / "collapse"))


def test_phase_diagram_figure_on_given_axes(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = synthetic_table(1)
    points = phase_diagram(table, n_boot=100)
    assert all(p.ok for p in points)
    fig0 = Figure()
    FigureCanvasAgg(fig0)
    ax = fig0.add_subplot()
    fig = plot_phase_diagram(points, ax, table=table)
    assert fig is fig0
    assert "lambda" in ax.get_xlabel() and "lattice units" in ax.get_xlabel()
    assert "m^2_c" in ax.get_ylabel()
    bars = ax.containers[0]
    np.testing.assert_allclose(bars.lines[0].get_xdata(), [0.5, 1.0])
    np.testing.assert_allclose(bars.lines[0].get_ydata(), [p.m2_c for p in points])
    _check_files(save_figure(fig, tmp_path / "phase"))


def test_plot_bad_input():
    table = synthetic_table()
    with pytest.raises(ValueError, match="observable"):
        plot_chi_collapse(table, 1.0, observable="binder")
    with pytest.raises(ValueError, match="nu"):
        plot_chi_collapse(table, 1.0, nu=0.0)
    # a missing critical point is skipped, not plotted as nan
    points = phase_diagram(table.select(lam=1.0).select(N=8), n_boot=10)
    fig = plot_phase_diagram(points)
    assert not points[0].ok and math.isnan(points[0].m2_c)
    assert any("without a crossing" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
