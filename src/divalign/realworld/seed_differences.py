"""Per-seed differences against CE at the main temperature: TOFU − CE and GEM − CE of every verifier metric.

Each SFT seed (the data order) trains CE, TOFU and GEM once; a loss is compared with the CE model of its own seed, on
the same prompts: the difference is the mean over prompts of the per-prompt differences (prompts where a metric is
undefined for either model are left out), with a 95 % percentile-bootstrap CI over prompts. Differences that keep
their sign across seeds say more than any one seed's CI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..diversity.aggregate import bootstrap_ci


def paired_difference(
    model: Sequence[float], reference: Sequence[float], n_bootstrap: int, seed: int
) -> dict[str, float]:
    """Mean over prompts of `model − reference` (NaN pairs dropped) and its bootstrap 95 % CI."""
    a, b = np.asarray(model, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"per-prompt values of different lengths: {a.size} and {b.size}")
    differences = (a - b)[~(np.isnan(a) | np.isnan(b))]
    if not differences.size:
        return {"difference": math.nan, "ci_low": math.nan, "ci_high": math.nan, "num_prompts": 0}
    low, high = bootstrap_ci(differences, n_resamples=n_bootstrap, seed=seed)
    return {
        "difference": float(differences.mean()),
        "ci_low": low,
        "ci_high": high,
        "num_prompts": int(differences.size),
    }


def seed_differences(
    per_prompt: Mapping[str, Mapping[str, Sequence[float]]],
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    n_bootstrap: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """`{model: {"reference": ..., metric: paired difference}}` for each (reference, model) pair, from
    `per_prompt[model][metric]` (the values at the main temperature)."""
    return {
        model: {
            "reference": reference,
            **{
                m: paired_difference(per_prompt[model][m], per_prompt[reference][m], n_bootstrap, seed) for m in metrics
            },
        }
        for reference, model in pairs
    }
