"""Analysis of aggregated scans (numpy only): finite-size scaling and the critical line.

Modules: :mod:`~rgdist.analysis.table` (the point table and its grouping),
:mod:`~rgdist.analysis.crossings` (Binder and xi2/N crossings of successive sizes),
:mod:`~rgdist.analysis.peaks` (chi peaks and gamma/nu), :mod:`~rgdist.analysis.critical`
(m2_c(lam), the critical line, the 2D Ising values), :mod:`~rgdist.analysis.bootstrap`
(shared bootstrap helpers).
"""
from rgdist.analysis.critical import (
    BINDER_STAR,
    GAMMA_OVER_NU_ISING,
    NU_ISING,
    XI_OVER_N_STAR,
    CriticalPoint,
    critical_point,
    phase_diagram,
    write_phase_diagram_csv,
)
from rgdist.analysis.crossings import CROSSING_OBSERVABLES, Crossing, PairCrossing, binder_crossing, crossings
from rgdist.analysis.peaks import Peak, PeakScaling, curve_peak, fit_power_law, susceptibility_peaks
from rgdist.analysis.table import OBSERVABLES, SOURCES, Table

__all__ = [
    "BINDER_STAR",
    "GAMMA_OVER_NU_ISING",
    "NU_ISING",
    "XI_OVER_N_STAR",
    "CROSSING_OBSERVABLES",
    "OBSERVABLES",
    "SOURCES",
    "CriticalPoint",
    "Crossing",
    "PairCrossing",
    "Peak",
    "PeakScaling",
    "Table",
    "binder_crossing",
    "critical_point",
    "crossings",
    "curve_peak",
    "fit_power_law",
    "phase_diagram",
    "susceptibility_peaks",
    "write_phase_diagram_csv",
]
