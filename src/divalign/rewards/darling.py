"""Diversity-aware reward in the spirit of DARLING: quality times how distinct a sample is within its prompt's group.

Li et al., "Jointly Reinforcing Diversity and Quality in Language Model Generations" (DARLING, arXiv 2509.02534)
multiply a quality reward by a per-sample diversity score computed among the rollouts of the same prompt, so a good
answer that many siblings repeat earns less than an equally good answer that nobody else gave. DARLING partitions the
group with a learned semantic-equivalence classifier; here the similarity is cheaper and needs no extra model to
train: Jaccard overlap of token n-grams, or cosine of sentence embeddings. The paper's GRPO runs also drop the
division by the group's reward std (TRL: ``scale_rewards: none``).

Distinctness of sample i among the n samples of its group: ``d_i = 1 - mean_{j != i} sim(i, j)`` (or ``max``), in
[0, 1]. The reward is ``q_i * d_i`` for a quality ``q_i >= 0``; a negative quality is scaled by ``2 - d_i`` instead, so
that on both sides of zero a more distinct sample is never worse off than a duplicate.

Groups and processes: rewards run on each process before TRL gathers them, and a prompt's ``num_generations``
completions can be split across processes (see :mod:`divalign.rewards.groups`). Rather than ask recipes to keep each
process's generation batch a multiple of ``num_generations``, the reward all-gathers the completions and quality
scores (small: strings and token ids), scores every whole group on every process, and keeps its own rows. The gather
is a collective; TRL calls reward functions on every process in lock-step, which is what makes it safe. Every process
scores all groups: negligible for n-grams; with `similarity: embedding` each process embeds the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from .base import completion_text, prompt_text
from .groups import check_group_prompts, gather_rows, split_groups

SIMILARITIES = ("ngram", "embedding")
AGGREGATES = ("mean", "max")


def _ngrams(ids: Sequence[Hashable], n: int) -> set[tuple[Hashable, ...]]:
    n = min(n, len(ids)) or 1  # short samples fall back to shorter n-grams rather than to an empty set
    return {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}


def ngram_similarity(samples: Sequence[Sequence[Hashable]], n: int = 2) -> np.ndarray:
    """Pairwise Jaccard overlap of the samples' n-gram sets; two empty samples are identical."""
    sets = [_ngrams(list(s), n) for s in samples]
    size = len(sets)
    sim = np.eye(size)
    for i in range(size):
        for j in range(i + 1, size):
            union = len(sets[i] | sets[j])
            sim[i, j] = sim[j, i] = len(sets[i] & sets[j]) / union if union else 1.0
    return sim


def embedding_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Pairwise cosine of L2-normalised embeddings, clipped to [0, 1] (anti-correlated texts count as unrelated)."""
    return np.clip(embeddings @ embeddings.T, 0.0, 1.0)


def distinctness(sim: np.ndarray, aggregate: str = "mean") -> np.ndarray:
    """Per sample, 1 minus its mean (or max) similarity to the other samples of the group; 1 for a lone sample."""
    size = sim.shape[0]
    if size < 2:
        return np.ones(size)
    others = sim[~np.eye(size, dtype=bool)].reshape(size, size - 1)
    pooled = others.max(axis=1) if aggregate == "max" else others.mean(axis=1)
    return 1.0 - pooled


def combine(quality: float | None, distinct: float) -> float | None:
    """Quality scaled by distinctness, monotone in distinctness whatever the quality's sign."""
    if quality is None or np.isnan(quality):
        return None
    return quality * distinct if quality >= 0 else quality * (2.0 - distinct)


class DarlingReward:
    """Quality reward x within-group distinctness (DARLING-style). Off unless a recipe lists `darling`.

    Args:
        quality: the quality reward, by registry name (`math_answer`) or as `{name: {kwargs}}`.
        similarity: `ngram` (Jaccard of token n-grams of the policy's completion ids) or `embedding`.
        aggregate: `mean` or `max` similarity to the other samples of the group.
        ngram_n: n-gram order for `similarity: ngram`.
        embedding_model: sentence-transformers model for `similarity: embedding`.
        num_generations: group size; filled in from the GRPO config by the stage.
        build_reward: turns `quality` into a reward function; filled in by the registry.
    """

    __name__ = "darling"

    def __init__(
        self,
        quality: str | dict = "math_answer",
        similarity: str = "ngram",
        aggregate: str = "mean",
        ngram_n: int = 2,
        embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2",
        num_generations: int = 8,
        build_reward: Callable[[Any], Any] | None = None,
    ) -> None:
        if similarity not in SIMILARITIES:
            raise ValueError(f"darling.similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"darling.aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if ngram_n < 1 or num_generations < 1:
            raise ValueError(f"darling.ngram_n and num_generations must be >= 1, got {ngram_n}, {num_generations}")
        if build_reward is None:
            raise ValueError("darling needs build_reward to build its quality reward (use divalign.rewards.build)")
        self.quality = build_reward(quality)
        if getattr(self.quality, "__name__", "") == "darling":
            raise ValueError("darling's quality reward cannot be darling itself")
        self.similarity, self.aggregate, self.ngram_n = similarity, aggregate, ngram_n
        self.embedding_model = embedding_model
        self.num_generations = num_generations
        self._embedder: Any = None

    def required_columns(self) -> list[tuple[str, ...]]:
        return self.quality.required_columns() if hasattr(self.quality, "required_columns") else [()]

    def _similarity(self, texts: list[str], ids: list[list[Hashable]]) -> np.ndarray:
        if self.similarity == "ngram":
            return ngram_similarity(ids, self.ngram_n)
        if self._embedder is None:
            from divalign.diversity import load_embedder

            self._embedder = load_embedder(self.embedding_model)
        return embedding_similarity(np.asarray(self._embedder.encode(texts)))

    def group_distinctness(self, texts: list[str], ids: list[list[Hashable]]) -> list[float]:
        """Distinctness of every sample, group by group (`num_generations` consecutive rows each)."""
        out: list[float] = []
        for text_group, id_group in zip(
            split_groups(texts, self.num_generations), split_groups(ids, self.num_generations), strict=True
        ):
            out.extend(distinctness(self._similarity(text_group, id_group), self.aggregate).tolist())
        return out

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any) -> list:
        quality = self.quality(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        texts = [completion_text(c) for c in completions]
        # Without the policy's token ids (a direct call), n-grams are taken over whitespace-separated words
        ids = [list(x) for x in completion_ids] if completion_ids is not None else [t.split() for t in texts]
        local = [(prompt_text(p), t, i) for p, t, i in zip(prompts, texts, ids, strict=True)]
        rows, offset = gather_rows(local)
        check_group_prompts([r[0] for r in rows], self.num_generations)
        distinct = self.group_distinctness([r[1] for r in rows], [r[2] for r in rows])
        mine = distinct[offset : offset + len(local)]
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("darling/distinctness", float(np.mean(mine)))
        return [combine(q, d) for q, d in zip(quality, mine, strict=True)]
