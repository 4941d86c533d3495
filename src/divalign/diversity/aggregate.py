"""Aggregation of per-prompt scores: mean and 10th/90th percentiles over prompts, bootstrap CI over prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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
    """Percentile bootstrap CI of the mean over prompts (Efron & Tibshirani 1993): resample prompts with
    replacement, take the mean of each resample, report the (1 ± confidence)/2 quantiles."""
    arr = _finite(values)
    if arr.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_resamples, arr.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize_with_ci(values: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """:func:`summarize` with the mean's bootstrap 95 % CI over prompts as ``ci_low`` and ``ci_high``."""
    low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    return {**summarize(values), "ci_low": low, "ci_high": high}
