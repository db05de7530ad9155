"""Lattice phi^4 theory: geometry, action, HMC and Metropolis ground truth."""
from rgdist.lattice.action import (
    Phi4Action,
    check_couplings,
    hopping_to_standard,
    laplacian,
    standard_to_hopping,
)
from rgdist.lattice.geometry import Lattice

__all__ = [
    "Lattice",
    "Phi4Action",
    "check_couplings",
    "hopping_to_standard",
    "standard_to_hopping",
    "laplacian",
]

from rgdist.lattice.hmc import HMC, integrate
from rgdist.lattice.metropolis import LocalMetropolis

__all__ += ["HMC", "integrate", "LocalMetropolis"]
