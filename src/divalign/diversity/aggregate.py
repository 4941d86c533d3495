"""Aggregation of per-prompt scores: mean and 10th/90th percentiles over prompts, BCa bootstrap CI over prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .bootstrap import bootstrap_interval

_ROUNDING = 1e-12  # a relative spread this small is float rounding, not a spread to resample


def _finite(values: Sequence[float]) -> np.ndarray:
    """Drop NaNs: a prompt on which a metric is undefined (e.g. K = 1 for a pairwise score) must not count."""
    arr = np.asarray(values, dtype=np.float64)
    return arr[~np.isnan(arr)]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, p10 and p90 over prompts (NaN-skipping; all NaN when no prompt has a defined value)."""
    arr = _finite(values)
    if arr.size == 0:
        return {"mean": math.nan, "p10": math.nan, "p90": math.nan}
    p10, p90 = np.percentile(arr, [10, 90])
    return {"mean": float(arr.mean()), "p10": float(p10), "p90": float(p90)}


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap CI of the mean over prompts (NaN prompts left out): `scipy.stats.bootstrap`'s BCa interval, its
    percentile interval where BCa is undefined (:mod:`divalign.diversity.bootstrap`); the mean itself, twice, for
    fewer than two prompts or prompts that all score the same (nothing to resample)."""
    arr = _finite(values)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size < 2 or np.ptp(arr) <= _ROUNDING * max(1.0, float(np.abs(arr).max())):
        return float(arr.mean()), float(arr.mean())
    found = bootstrap_interval((arr,), np.mean, n_resamples=n_resamples, seed=seed, confidence=confidence)
    return found.low, found.high


def summarize_with_ci(values: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """:func:`summarize` with the mean's bootstrap 95 % CI over prompts as ``ci_low`` and ``ci_high``."""
    low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    return {**summarize(values), "ci_low": low, "ci_high": high}
