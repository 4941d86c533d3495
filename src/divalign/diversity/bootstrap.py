"""Bootstrap confidence intervals over prompts, from `scipy.stats.bootstrap`: BCa (bias-corrected and accelerated:
right for skewed statistics such as a ratio or a mean near a bound), and scipy's percentile interval where BCa comes
back undefined for the data (its jackknife has no spread), which the caller is told."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class BootstrapInterval:
    """A CI's ends, the method that gave them ("BCa" or "percentile") and, when not BCa, why."""

    low: float
    high: float
    method: str
    note: str = ""


def bootstrap_interval(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray | float],
    *,
    paired: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    vectorized: bool = True,
) -> BootstrapInterval:
    """`scipy.stats.bootstrap`'s BCa interval of `statistic` over `samples` (resampled together when `paired`);
    its percentile interval where BCa is undefined. `vectorized`: `statistic` takes an `axis` argument."""
    kwargs = {"paired": paired, "n_resamples": n_resamples, "confidence_level": confidence, "vectorized": vectorized}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.bootstrap(samples, statistic, method="BCa", rng=np.random.default_rng(seed), **kwargs)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isfinite(low) and math.isfinite(high):
        return BootstrapInterval(low, high, "BCa")
    why = next((str(w.message).split(".")[0] for w in caught), "BCa returned NaN")
    result = stats.bootstrap(samples, statistic, method="percentile", rng=np.random.default_rng(seed), **kwargs)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return BootstrapInterval(low, high, "percentile", f"BCa undefined here ({why}): percentile interval")
