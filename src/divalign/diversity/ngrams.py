"""N-gram diversity: distinct-n (Li et al., NAACL 2016) and EAD (Liu et al., ACL 2022).

All functions take the units of the K samples of one prompt (or one sample per prompt for the across-prompt
variant): the policy's token ids by default, or words (`paper_words`). N-grams never cross sample boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

TokenSeqs = Sequence[Sequence[Hashable]]


def _ngrams(seqs: TokenSeqs, n: int) -> tuple[set[tuple[Hashable, ...]], int]:
    """Distinct n-grams pooled over `seqs` and the total number of n-grams."""
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    seen: set[tuple[Hashable, ...]] = set()
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


def truncate_to_common_length(seqs: TokenSeqs) -> list[list[Hashable]]:
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


def ead(seqs: TokenSeqs, n: int, vocab_size: int, *, empty: float = math.nan, clamp: bool = False) -> float:
    """Expectation-Adjusted Distinct (Liu et al., "Rethinking and Refining the Distinct Metric", ACL 2022).

    EAD-n = N_distinct / (V · (1 − ((V − 1)/V)^C)) with C the total number of n-grams and V the vocabulary size
    (used for every n, as in the paper). Unlike distinct-n it does not decay with length for a uniform source.
    `empty` is returned when the samples hold no n-gram of order n; `clamp` cuts the value to [0, 1].
    """
    seen, total = _ngrams(seqs, n)
    if not total:
        return empty
    value = len(seen) / expected_distinct(total, vocab_size)
    return min(max(value, 0.0), 1.0) if clamp else value


def ead_mean(
    seqs: TokenSeqs, vocab_size: int, max_n: int = 5, *, empty_orders: str = "skip", clamp: bool = False
) -> float:
    """EAD averaged over the orders n = 1..max_n.

    divalign's defaults: an order with no n-grams (every sample shorter than n units) leaves the mean, NaN when no
    order has any, and no order is clamped. Karouzos et al.'s code (arXiv 2604.16027) counts such an order as 0
    (`empty_orders="zero"`: samples of one word each then score at most 0.2) and clamps each order at 1
    (`clamp=True`); it counts words (`paper_words`), not token ids. The `karouzos2026` profile selects all three.
    """
    if empty_orders not in ("skip", "zero"):
        raise ValueError(f"empty_orders must be 'skip' or 'zero', got {empty_orders!r}")
    empty = math.nan if empty_orders == "skip" else 0.0
    values = [ead(seqs, n, vocab_size, empty=empty, clamp=clamp) for n in range(1, max_n + 1)]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def paper_words(text: str) -> list[str]:
    """The n-gram units of Karouzos et al.'s EAD: the text with every '.' and newline deleted (not replaced by a
    space: "end.\\nNext" is one word), split on whitespace."""
    return text.replace(".", "").replace("\n", "").split()
