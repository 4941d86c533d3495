"""Cross-model homogeneity: do two models' samples for the same prompt say the same things?

Models can each look varied while all drawing from one narrow prior ("Artificial Hivemind", Jiang et al., 2025:
many models give near-identical answers to open-ended prompts). For models A and B and one prompt, the cross
similarity is the mean cosine over every pair (a_i, b_j) of their samples' embeddings; a model's within similarity
is the mean over its pairs i ≠ j (1 − SBERT diversity). Averaged over prompts they form a matrix (within on the
diagonal). The mean over pairs is the dot product of the two mean embeddings, so, in expectation: B sampling A's
distribution gives cross(A, B) = within(A) = within(B); B spreading wider around A's answers gives a value between
within(B) and within(A); B saying things A does not gives a value below both.
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


def cross_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Mean cosine over all pairs (first_i, second_j) of two sample sets' embeddings; NaN when either is empty."""
    a, b = _unit_rows(first), _unit_rows(second)
    if not len(a) or not len(b):
        return math.nan
    # Σ_ij a_i·b_j = (Σ_i a_i)·(Σ_j b_j): no n_a × n_b matrix needed
    return float(a.sum(axis=0) @ b.sum(axis=0)) / (len(a) * len(b))


def within_similarity(emb: np.ndarray) -> float:
    """Mean cosine over the pairs i ≠ j of one sample set (1 − SBERT diversity); NaN for fewer than two samples."""
    return 1.0 - sbert_diversity(emb)


def homogeneity_per_prompt(models: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """(M, M, P) array: entry [a, b, p] is cross_similarity of models a and b on prompt p for a ≠ b, and the within
    similarity of model a on prompt p on the diagonal. `models[m][p]` is model m's (K, d) embeddings of prompt p."""
    num_models = len(models)
    num_prompts = {len(m) for m in models}
    if len(num_prompts) > 1:
        raise ValueError(f"every model needs the same prompts, got {sorted(num_prompts)} prompts")
    out = np.full((num_models, num_models, num_prompts.pop() if num_models else 0), math.nan)
    for a in range(num_models):
        for b in range(num_models):
            for p, (x, y) in enumerate(zip(models[a], models[b], strict=True)):
                out[a, b, p] = within_similarity(x) if a == b else cross_similarity(x, y)
    return out
