"""Within- vs across-prompt spread of the samples' embeddings.

A model's samples vary for two reasons: the prompts differ (across) and, for one prompt, the samples differ
(within). The law of total variance splits the total: Σ_p Σ_i ‖x_pi − x̄‖² = Σ_p Σ_i ‖x_pi − x̄_p‖² +
Σ_p K_p ‖x̄_p − x̄‖², with x̄_p a prompt's mean embedding and x̄ the mean over all samples. The within-prompt share
(first term / total) is the part of the spread a single prompt's samples cover: near 0, every prompt gets one
answer however different the prompts are (run-to-run noise is not coverage); near 1, a prompt's samples spread as
much as samples of different prompts do. Embeddings are L2-normalised first (the cosine geometry of the other
semantic metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_NO_VARIANCE = 1e-10  # mean squared distance to the grand mean below which the samples count as identical

@dataclass(frozen=True)
class PromptMoments:
    """Per prompt: sample count, mean embedding, and within-prompt sum of squares Σ_i ‖x_pi − x̄_p‖²."""

    counts: np.ndarray  # (P,)
    means: np.ndarray  # (P, d)
    within_ss: np.ndarray  # (P,)


def prompt_moments(groups: Sequence[np.ndarray]) -> PromptMoments:
    """The moments of every prompt with at least one sample (prompts without samples are left out)."""
    kept = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not kept:
        return PromptMoments(np.zeros(0), np.zeros((0, 0)), np.zeros(0))
    unit = [g / np.where((n := np.linalg.norm(g, axis=1, keepdims=True)) > 0, n, 1.0) for g in kept]
    means = np.stack([g.mean(axis=0) for g in unit])
    within = np.array([float(((g - m) ** 2).sum()) for g, m in zip(unit, means, strict=True)])
    return PromptMoments(np.array([len(g) for g in unit], dtype=np.float64), means, within)


def within_share(moments: PromptMoments, prompts: np.ndarray | None = None) -> float:
    """Within-prompt share of the total variance over the prompts `prompts` (indices, repeats allowed: a bootstrap
    resample); all prompts by default. NaN when there is no variance (every sample the same: a mean squared distance
    to the grand mean below 1e-10) or no prompt."""
    index = np.arange(len(moments.counts)) if prompts is None else np.asarray(prompts)
    if not index.size:
        return math.nan
    counts, means, within = moments.counts[index], moments.means[index], moments.within_ss[index]
    grand = (counts[:, None] * means).sum(axis=0) / counts.sum()
    between = float((counts * ((means - grand) ** 2).sum(axis=1)).sum())
    total = float(within.sum()) + between
    # identical samples embed identically only up to float noise (~1e-8): a ratio of two noise terms means nothing
    return float(within.sum()) / total if total > _NO_VARIANCE * counts.sum() else math.nan


def within_prompt_share(groups: Sequence[np.ndarray]) -> float:
    """Share of the embedding variance that lies within prompts; `groups[p]` is prompt p's (K_p, d) embeddings."""
    return within_share(prompt_moments(groups))
