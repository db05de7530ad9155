"""Analysis of aggregated scans (numpy only): finite-size scaling and the critical line.

Modules: :mod:`~rgdist.analysis.table` (the point table and its grouping),
:mod:`~rgdist.analysis.crossings` (Binder and xi2/N crossings of successive sizes),
:mod:`~rgdist.analysis.peaks` (chi peaks and gamma/nu), :mod:`~rgdist.analysis.critical`
(m2_c(lam), the critical line, the 2D Ising values), :mod:`~rgdist.analysis.bootstrap`
(shared bootstrap helpers), :mod:`~rgdist.analysis.reweight_m2` (single and multi-histogram
reweighting of HMC data in m2 with jackknife errors; parts in ``reweight_core``,
``reweight_mbar``, ``reweight_errors``, ``reweight_observables``).
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
from rgdist.analysis.reweight_m2 import (
    DS_DM2,
    Estimate,
    MultiHistogram,
    config_data,
    default_min_ess,
    derived_observables,
    kish_ess,
    single_histogram,
)
from rgdist.analysis.table import OBSERVABLES, SOURCES, Table

__all__ = [
    "BINDER_STAR",
    "DS_DM2",
    "GAMMA_OVER_NU_ISING",
    "NU_ISING",
    "XI_OVER_N_STAR",
    "CROSSING_OBSERVABLES",
    "OBSERVABLES",
    "SOURCES",
    "CriticalPoint",
    "Crossing",
    "Estimate",
    "MultiHistogram",
    "PairCrossing",
    "Peak",
    "PeakScaling",
    "Table",
    "binder_crossing",
    "config_data",
    "critical_point",
    "crossings",
    "curve_peak",
    "default_min_ess",
    "derived_observables",
    "fit_power_law",
    "kish_ess",
    "phase_diagram",
    "single_histogram",
    "susceptibility_peaks",
    "write_phase_diagram_csv",
]
