"""Argument checks shared by the flow-baseline modules (rgdist.flow.baseline): positive
integers (rgdist.flow.base.check_pos_int), finite positive floats and the two float dtypes a
model may run in. Every failure is a ValueError naming the argument and what is allowed."""
from __future__ import annotations

import math

import torch

from rgdist.flow.base import check_pos_int

__all__ = ["DTYPES", "check_pos_int", "check_pos_float", "torch_dtype"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_pos_float(name: str, value) -> float:
    """``value`` as a float, which must be finite and > 0 (bools refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of "float32" / "float64" (or of those torch dtypes themselves)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
