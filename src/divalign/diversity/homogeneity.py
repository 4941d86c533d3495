"""Cross-model homogeneity: do two models' samples for the same prompt say the same things?

Models can each look varied while all drawing from one narrow prior ("Artificial Hivemind", Jiang et al., 2025:
many models give near-identical answers to open-ended prompts). For models A and B and one prompt, the cross
similarity is the mean cosine over the pairs (a_i, b_j) of their samples' embeddings with i ≠ j; a model's within
similarity is the mean over its own pairs i ≠ j (1 − SBERT diversity). Averaged over prompts they form a matrix
(within on the diagonal).

The same-index pairs (a_i, b_i) are left out because `divalign eval` samples paired: sample i of every model draws
the same noise (`divalign.generation`), which is right for comparing models sample by sample but makes a_i and b_i
correlated — two identical models would give a_i = b_i, and an all-pairs cross cell of within + (1 − within)/K,
above the diagonal; related models would read as more alike than they are. Over the pairs i ≠ j, whose noise is
independent, two identical models give cross = within exactly, and in expectation: B sampling A's distribution gives
cross(A, B) = within(A) = within(B); B spreading wider around A's answers gives a value between within(B) and
within(A); B saying things A does not gives a value below both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .embedding import sbert_diversity


def _unit_rows(emb: np.ndarray) -> np.ndarray:
    x = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def cross_similarity(first: np.ndarray, second: np.ndarray, paired: bool = False) -> float:
    """Mean cosine over the pairs (first_i, second_j) of two sample sets' embeddings: all of them, or with `paired`
    (sample i of both sets drew the same noise) those with i ≠ j. NaN when no pair is left."""
    a, b = _unit_rows(first), _unit_rows(second)
    if not len(a) or not len(b):
        return math.nan
    # Σ_ij a_i·b_j = (Σ_i a_i)·(Σ_j b_j): no n_a × n_b matrix needed
    total, count = float(a.sum(axis=0) @ b.sum(axis=0)), len(a) * len(b)
    if paired:
        same = min(len(a), len(b))
        total -= float(np.sum(a[:same] * b[:same]))
        count -= same
    return total / count if count else math.nan


def within_similarity(emb: np.ndarray) -> float:
    """Mean cosine over the pairs i ≠ j of one sample set (1 − SBERT diversity); NaN for fewer than two samples."""
    return 1.0 - sbert_diversity(emb)


def homogeneity_per_prompt(models: Sequence[Sequence[np.ndarray]], paired: bool = True) -> np.ndarray:
    """(M, M, P) array: entry [a, b, p] is cross_similarity of models a and b on prompt p for a ≠ b (leaving out the
    same-index pairs when `paired`, as `divalign eval` samples), and the within similarity of model a on prompt p on
    the diagonal. `models[m][p]` is model m's (K, d) embeddings of prompt p."""
    num_models = len(models)
    num_prompts = {len(m) for m in models}
    if len(num_prompts) > 1:
        raise ValueError(f"every model needs the same prompts, got {sorted(num_prompts)} prompts")
    out = np.full((num_models, num_models, num_prompts.pop() if num_models else 0), math.nan)
    for a in range(num_models):
        for b in range(num_models):
            for p, (x, y) in enumerate(zip(models[a], models[b], strict=True)):
                out[a, b, p] = within_similarity(x) if a == b else cross_similarity(x, y, paired)
    return out
