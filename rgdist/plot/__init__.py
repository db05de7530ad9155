"""Figures. Each plot function takes data and an optional matplotlib ``ax`` and returns the
figure; matplotlib is imported only when a figure is made (Agg canvas, no pyplot state)."""
from rgdist.plot.phase import (
    plot_binder,
    plot_chi_collapse,
    plot_crossing_curves,
    plot_phase_diagram,
    plot_xi_over_N,
    save_figure,
)

__all__ = [
    "plot_binder",
    "plot_chi_collapse",
    "plot_crossing_curves",
    "plot_phase_diagram",
    "plot_xi_over_N",
    "save_figure",
]
