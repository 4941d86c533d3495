"""results.json files in strict JSON: NaN and infinities have no JSON spelling, so they are written as null (and read
back as NaN)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def strict_json(value: Any) -> Any:
    """`value` with NaN/±inf as None, tuples and arrays as lists, numpy scalars as Python numbers and mapping keys as
    strings: what `json.dumps(..., allow_nan=False)` accepts."""
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [strict_json(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def finite_or_none(value: float) -> float | None:
    """One number as strict JSON writes it: None for NaN/±inf."""
    return float(value) if math.isfinite(value) else None


def nan_array(values: Iterable[float | None]) -> np.ndarray:
    """Numbers read back from strict JSON as a float64 array, None as NaN."""
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
