"""Exact-RG noising schemes (forward processes) and time grids, SPEC section 4."""
from rgdist.rg.grids import GRID_KINDS, geometric_grid, snr_grid, uniform_grid
from rgdist.rg.schemes import (
    SCHEMES,
    CarossoScheme,
    PolchinskiScheme,
    RenormalizedPolchinskiScheme,
    Scheme,
    VEScheme,
    VPScheme,
    build_scheme,
)

__all__ = [
    "Scheme",
    "CarossoScheme",
    "PolchinskiScheme",
    "RenormalizedPolchinskiScheme",
    "VPScheme",
    "VEScheme",
    "SCHEMES",
    "build_scheme",
    "GRID_KINDS",
    "uniform_grid",
    "geometric_grid",
    "snr_grid",
]
