"""Quality control vs genuine narrowing (Karouzos et al., "Where does output diversity collapse in post-training?",
arXiv 2604.16027): a model's diversity drop against a base, on all samples and on correct samples only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..diversity import REGISTRY
from .sampling import Samples


def correct_subset(samples: Samples, correct: list[list[bool]]) -> tuple[list[list[str]], list[list[list[int]]]]:
    texts = [[t for t, ok in zip(g, c, strict=True) if ok] for g, c in zip(samples.texts, correct, strict=True)]
    ids = [[t for t, ok in zip(g, c, strict=True) if ok] for g, c in zip(samples.token_ids, correct, strict=True)]
    return texts, ids


def _paired_mean(values: list[float], mask: np.ndarray) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64)[mask])) if mask.any() else math.nan


def quality_split(base: dict[str, Any], model: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Diversity drop relative to the base, on all samples vs on correct samples only (Karouzos et al.): the drop
    that survives restricting to correct samples is genuine narrowing, the rest is quality control (the model stops
    producing wrong — and therefore different — answers).

    Both drops are averaged over the same prompts: those where the correct-only value is defined for both models
    (e.g. at least two correct samples for a pairwise metric); otherwise the two drops would average different
    prompt sets and their difference would mix in prompt difficulty.
    """
    out = {}
    for name in model["correct_only"]:
        sign = REGISTRY[name].direction
        per = [
            base["per_prompt"]["all"][name],
            model["per_prompt"]["all"][name],
            base["per_prompt"]["correct_only"][name],
            model["per_prompt"]["correct_only"][name],
        ]
        mask = np.logical_and.reduce([~np.isnan(np.asarray(v, dtype=np.float64)) for v in per])
        base_all, model_all, base_ok, model_ok = (_paired_mean(v, mask) for v in per)
        drop_all, narrowing = sign * (base_all - model_all), sign * (base_ok - model_ok)
        share = narrowing / drop_all if drop_all and not math.isnan(drop_all) else math.nan
        out[name] = {
            "drop_all": drop_all,
            "narrowing": narrowing,
            "quality_control": drop_all - narrowing,
            "narrowing_share": share,
            "num_prompts": int(mask.sum()),
        }
    return out
