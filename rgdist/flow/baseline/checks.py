"""Argument checks shared by the flow-baseline modules (rgdist.flow.baseline): positive
integers and finite positive floats (rgdist.checks) and the two float dtypes a
model may run in. Every failure is a ValueError naming the argument and what is allowed."""
from __future__ import annotations

import torch

from rgdist.checks import check_positive_float as check_pos_float
from rgdist.checks import check_positive_int as check_pos_int

__all__ = ["DTYPES", "check_pos_int", "check_pos_float", "torch_dtype"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of "float32" / "float64" (or of those torch dtypes themselves)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
