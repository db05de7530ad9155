"""Exact-RG noising schemes: the registry (SCHEMES, build_scheme) of the linear SDEs diagonal
in momentum space (SPEC section 4).

The base class and its closed-form conventions are in rgdist.rg.base; the schemes in
rgdist.rg.carosso (heat kernel), rgdist.rg.polchinski (Polchinski and renormalized
Polchinski) and rgdist.rg.baselines (VP, VE). Every scheme class stays importable from here.
"""
from __future__ import annotations

import inspect

from rgdist.lattice import Lattice
from rgdist.rg.base import Scheme
from rgdist.rg.baselines import VEScheme, VPScheme
from rgdist.rg.carosso import CarossoScheme
from rgdist.rg.polchinski import PolchinskiScheme, RenormalizedPolchinskiScheme

__all__ = ["Scheme", "CarossoScheme", "PolchinskiScheme", "RenormalizedPolchinskiScheme",
           "VPScheme", "VEScheme", "SCHEMES", "build_scheme"]


SCHEMES: dict[str, type[Scheme]] = {
    cls.name: cls
    for cls in (CarossoScheme, PolchinskiScheme, RenormalizedPolchinskiScheme, VPScheme, VEScheme)
}


def build_scheme(name: str, lattice: Lattice, **params) -> Scheme:
    """The scheme registered under ``name`` with keyword ``params`` (e.g. T, mu2, Lambda0)."""
    if name not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {name!r}")
    cls = SCHEMES[name]
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "lattice")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for scheme {name!r}; allowed: {allowed}")
    return cls(lattice, **params)
