"""Token n-gram diversity: distinct-n (Li et al., NAACL 2016) and EAD (Liu et al., ACL 2022).

All functions take the policy's token ids of the K samples of one prompt (or one sample per prompt for the
across-prompt variant). N-grams never cross sample boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TokenSeqs = Sequence[Sequence[int]]


def _ngrams(seqs: TokenSeqs, n: int) -> tuple[set[tuple[int, ...]], int]:
    """Distinct n-grams pooled over `seqs` and the total number of n-grams."""
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    seen: set[tuple[int, ...]] = set()
    total = 0
    for seq in seqs:
        ids = tuple(seq)
        count = max(len(ids) - n + 1, 0)
        total += count
        seen.update(ids[i : i + n] for i in range(count))
    return seen, total


def distinct_n(seqs: TokenSeqs, n: int) -> float:
    """Distinct-n: unique n-grams / all n-grams, pooled over the samples (Li et al., NAACL 2016, arXiv 1510.03055).

    Returns NaN when the samples hold no n-gram of order `n` (every sample shorter than n tokens).
    """
    seen, total = _ngrams(seqs, n)
    return len(seen) / total if total else math.nan


def truncate_to_common_length(seqs: TokenSeqs) -> list[list[int]]:
    """Cut every sample to the length of the shortest one.

    Distinct-n falls as texts get longer, so comparing models that write at different lengths conflates verbosity
    with diversity; scoring the common prefix removes that confound.
    """
    if not seqs:
        return []
    length = min(len(seq) for seq in seqs)
    return [list(seq[:length]) for seq in seqs]


def expected_distinct(num_ngrams: int, vocab_size: int) -> float:
    """Expected number of distinct items among `num_ngrams` uniform draws from `vocab_size` items:
    V · (1 − ((V − 1)/V)^C), computed with log1p/expm1 because (1 − 1/V)^C loses all precision for V ~ 1e5."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return -vocab_size * math.expm1(num_ngrams * math.log1p(-1.0 / vocab_size)) if vocab_size > 1 else 1.0


def ead(seqs: TokenSeqs, n: int, vocab_size: int) -> float:
    """Expectation-Adjusted Distinct (Liu et al., "Rethinking and Refining the Distinct Metric", ACL 2022).

    EAD-n = N_distinct / (V · (1 − ((V − 1)/V)^C)) with C the total number of n-grams and V the vocabulary size
    (used for every n, as in the paper). Unlike distinct-n it does not decay with length for a uniform source.
    """
    seen, total = _ngrams(seqs, n)
    if not total:
        return math.nan
    return len(seen) / expected_distinct(total, vocab_size)


def ead_mean(seqs: TokenSeqs, vocab_size: int, max_n: int = 5) -> float:
    """EAD averaged over n = 1..max_n, the summary used by Kirk et al. (ICLR 2024) and Karouzos et al.
    (arXiv 2604.16027). Orders with no n-grams are skipped; NaN if none has any."""
    values = [v for v in (ead(seqs, n, vocab_size) for n in range(1, max_n + 1)) if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan
