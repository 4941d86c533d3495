"""Semantic coverage: how many different things a prompt's K samples say, counted as semantic clusters.

Lexical metrics cannot tell K rewordings of one answer from K different answers. Counting meaning classes can: the
samples are partitioned into classes of equivalent generations, as NoveltyBench counts distinct generations (Zhang
et al., "NoveltyBench: Evaluating Language Models for Humanlike Diversity", arXiv 2504.05228) and as semantic entropy
groups answers by bidirectional entailment (Kuhn et al., ICLR 2023, arXiv 2302.09664). Each sample, in order, joins
the first class whose first member it is equivalent to, else it starts a new class. Two equivalences:

- embeddings (`embedding_clusters`): cosine similarity of the sentence embeddings >= `threshold`.
  `DEFAULT_CLUSTER_THRESHOLD` = 0.9, chosen on all-MiniLM-L6-v2: a sentence reworded with the same content
  ("Paris is the capital of France." / "The capital of France is Paris.", 0.99; "The cat sat on the mat." /
  "A cat was sitting on the mat.", 0.95) falls in one class, while different items stay apart even when they are
  near-synonyms (every pair of the toy world's answers to one prompt is below 0.86: sofa / couch). Other embedders
  spread cosines differently: set the threshold for yours.
- NLI (`nli_clusters`): each entails the other (entailment is the NLI model's most probable label both ways).

Identical texts are always equivalent (no embedder or NLI call decides that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .nli import NLIScorer

DEFAULT_CLUSTER_THRESHOLD = 0.9


def greedy_partition(count: int, equivalent: Callable[[int, int], bool]) -> list[int]:
    """Class label of each of `count` items: item i joins the first class whose first member r has
    `equivalent(r, i)`, else it opens a new class. Labels are 0, 1, ... in order of first appearance."""
    representatives: list[int] = []
    labels: list[int] = []
    for item in range(count):
        label = next((c for c, r in enumerate(representatives) if equivalent(r, item)), None)
        if label is None:
            label = len(representatives)
            representatives.append(item)
        labels.append(label)
    return labels


def embedding_clusters(
    embeddings: np.ndarray, threshold: float = DEFAULT_CLUSTER_THRESHOLD, texts: Sequence[str] | None = None
) -> list[int]:
    """Class labels of samples whose embeddings (rows, any norm) have cosine >= `threshold` with the class's first
    member; with `texts`, identical texts share a class whatever their embeddings."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"cluster threshold must be a cosine in [-1, 1], got {threshold}")
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    cosine = x @ x.T

    def equivalent(r: int, i: int) -> bool:
        return (texts is not None and texts[r] == texts[i]) or bool(cosine[r, i] >= threshold)

    return greedy_partition(x.shape[0], equivalent)


def nli_clusters(texts: Sequence[str], scorer: NLIScorer) -> list[int]:
    """Class labels under bidirectional entailment, from one batch of NLI calls over the ordered pairs of distinct
    texts (`scorer.probabilities` rows: [P(entailment), P(neutral), P(contradiction)])."""
    unique = list(dict.fromkeys(texts))
    pairs = [(a, b) for a in unique for b in unique if a != b]
    entails: dict[tuple[str, str], bool] = {}
    if pairs:
        probs = np.asarray(scorer.probabilities([a for a, _ in pairs], [b for _, b in pairs]))
        entails = {pair: bool(row.argmax() == 0) for pair, row in zip(pairs, probs, strict=True)}

    def equivalent(r: int, i: int) -> bool:
        a, b = texts[r], texts[i]
        return a == b or (entails[(a, b)] and entails[(b, a)])

    return greedy_partition(len(texts), equivalent)


def cluster_count(labels: Sequence[int]) -> float:
    """Number of classes; NaN for no samples."""
    return float(len(set(labels))) if len(labels) else float("nan")
