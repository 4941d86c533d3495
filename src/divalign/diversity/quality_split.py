"""Quality next to diversity (Karouzos et al., "Where does output diversity collapse in post-training?", arXiv
2604.16027): a per-sample quality, diversity over correct samples only, and a model's diversity drop against a base
split into quality control and genuine narrowing.

One code path for `divalign eval` (`evaluation/lineage.py`) and the training callback (`divalign.callback`, against
its step-0 evaluation). Like the paper's quality-filtered diversity, every correct-only metric and the split count a
prompt only when it has at least :data:`MIN_CORRECT` correct samples: with one, a pairwise metric (SBERT, self-BLEU)
is undefined while others are not (Vendi is 1.0, distinct-n is defined), and the correct-only averages would run
over different prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .registry import REGISTRY, DiversityScores, score_groups

MIN_CORRECT = 2  # correct samples a prompt needs to count in any correct-only metric or in the split


@dataclass
class QualityScores:
    """Quality and correct-only diversity of one set of samples.

    Attributes:
        quality: per prompt, the mean quality of its samples (NaN for a prompt without samples).
        correct_only: the diversity metrics over each prompt's correct samples; NaN on prompts with fewer than
            :data:`MIN_CORRECT` correct samples. ``None`` when correctness is not defined (no verdicts).
        num_prompts: the prompts with at least :data:`MIN_CORRECT` correct samples.
    """

    quality: np.ndarray
    correct_only: DiversityScores | None
    num_prompts: int


def correct_subset(
    texts: Sequence[Sequence[str]], token_ids: Sequence[Sequence[Sequence[int]]], correct: Sequence[Sequence[bool]]
) -> tuple[list[list[str]], list[list[list[int]]]]:
    """Per prompt, its correct samples (texts and token ids) when it has at least :data:`MIN_CORRECT` of them, else
    none, so every correct-only metric is undefined (NaN) on the same prompts."""
    kept_texts, kept_ids = [], []
    for group, ids, verdicts in zip(texts, token_ids, correct, strict=True):
        keep = sum(map(bool, verdicts)) >= MIN_CORRECT
        kept_texts.append([t for t, ok in zip(group, verdicts, strict=True) if ok] if keep else [])
        kept_ids.append([list(i) for i, ok in zip(ids, verdicts, strict=True) if ok] if keep else [])
    return kept_texts, kept_ids


def diversity_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics among ``metrics`` that score diversity (not length, not pass@k): those with a correct-only value."""
    return [m for m in metrics if REGISTRY[m].direction != 0]


def score_quality(
    texts: Sequence[Sequence[str]],
    token_ids: Sequence[Sequence[Sequence[int]]],
    quality: Sequence[Sequence[float]],
    correct: Sequence[Sequence[bool]] | None,
    metrics: Sequence[str],
    **scoring: Any,
) -> QualityScores:
    """Per-prompt mean quality and, with per-sample verdicts ``correct``, the diversity ``metrics`` over correct
    samples only. ``scoring`` is what :func:`divalign.diversity.registry.score_groups` takes besides the samples
    (``vocab_size``, ``embedder``, ``profile``, ...)."""
    per_prompt = np.array([float(np.mean(q)) if len(q) else math.nan for q in quality], dtype=np.float64)
    if correct is None:
        return QualityScores(per_prompt, None, 0)
    kept_texts, kept_ids = correct_subset(texts, token_ids, correct)
    scores = score_groups(kept_texts, kept_ids, metrics=diversity_metrics(metrics), **scoring)
    return QualityScores(per_prompt, scores, sum(1 for group in kept_texts if group))


def _paired_mean(values: Sequence[float], mask: np.ndarray) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64)[mask])) if mask.any() else math.nan


def split_drop(
    direction: int,
    base_all: Sequence[float],
    model_all: Sequence[float],
    base_correct: Sequence[float],
    model_correct: Sequence[float],
) -> dict[str, float]:
    """One metric's diversity drop from a base to a model (per-prompt values; NaN = undefined on that prompt), on all
    samples and on correct samples only: the drop that survives restricting to correct samples is genuine narrowing,
    the rest is quality control (the model stops producing wrong — and therefore different — answers).

    Both drops are averaged over the same prompts, those where all four values are defined (at least
    :data:`MIN_CORRECT` correct samples under both models); otherwise the two drops would average different prompt
    sets and their difference would mix in prompt difficulty. ``direction`` is the metric's (+1: higher = more
    diverse, −1: higher = less diverse), so a positive drop always means less diverse.
    """
    per = [base_all, model_all, base_correct, model_correct]
    mask = np.logical_and.reduce([~np.isnan(np.asarray(v, dtype=np.float64)) for v in per])
    mean_base_all, mean_model_all, mean_base_ok, mean_model_ok = (_paired_mean(v, mask) for v in per)
    drop_all, narrowing = direction * (mean_base_all - mean_model_all), direction * (mean_base_ok - mean_model_ok)
    share = narrowing / drop_all if drop_all and not math.isnan(drop_all) else math.nan
    return {
        "drop_all": drop_all,
        "narrowing": narrowing,
        "quality_control": drop_all - narrowing,
        "narrowing_share": share,
        "num_prompts": int(mask.sum()),
    }


def quality_split(base: dict[str, Any], model: dict[str, Any]) -> dict[str, dict[str, float]]:
    """:func:`split_drop` of every correct-only metric of two `divalign eval` model entries (their ``per_prompt``
    values on all samples and on correct samples only)."""
    return {
        name: split_drop(
            REGISTRY[name].direction,
            base["per_prompt"]["all"][name],
            model["per_prompt"]["all"][name],
            base["per_prompt"]["correct_only"][name],
            model["per_prompt"]["correct_only"][name],
        )
        for name in model["correct_only"]
    }
