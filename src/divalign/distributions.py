"""The demo worlds' answer distributions: Zipf probabilities over ranks and the Shannon entropy of a distribution."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def zipf_probs(n: int, exponent: float) -> list[float]:
    """``p_k ∝ 1 / k^s`` for ranks ``k = 1..n``, normalised to sum to 1."""
    weights = [rank**-exponent for rank in range(1, n + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def entropy(probs: Sequence[float] | Mapping[str, float]) -> float:
    """Shannon entropy ``−Σ p log p`` in nats of a normalised distribution (zeros contribute 0)."""
    values = probs.values() if isinstance(probs, Mapping) else probs
    return -sum(p * math.log(p) for p in values if p > 0)
