"""The library's argument checks: each returns the checked value or raises a ValueError that
names the argument and what is allowed.

Imports nothing of rgdist (any layer may use it). The campaign layer validates its sections
itself (rgdist.campaign.rules: ConfigError naming the key path, exit 2; the rules shared with
the classes live in rgdist.catalog, whose ParameterError the schema turns into ConfigError) and
passes checked values, so a ValueError from here means a library caller's mistake.
"""
from __future__ import annotations

import math

__all__ = ["check_positive_int", "check_positive_float", "check_unit_interval"]


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (integers only: bools and floats refused)."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value) -> float:
    """``value`` as a float, finite and > 0 (bools refused)."""
    try:
        v = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_unit_interval(name: str, value) -> float:
    """``value`` as a float in the open interval (0, 1) (bools refused)."""
    try:
        v = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        v = math.nan
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return v
