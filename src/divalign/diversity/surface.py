"""Surface-level diversity of raw texts: exact duplicates, gzip compressibility, length."""

from __future__ import annotations

import gzip
import math
import statistics
from collections import Counter
from collections.abc import Sequence

# Separator for joining samples before compression; a newline keeps sample boundaries visible to the compressor
# without adding bytes that would themselves be highly repetitive.
_JOIN = "\n"


def exact_dup_rate(texts: Sequence[str]) -> float:
    """Fraction of samples whose text is exactly equal to at least one other sample.

    1.0 when all K samples are identical, 0.0 when all are distinct (a common mode-collapse indicator, e.g. Kirk et
    al., ICLR 2024). NaN for fewer than two samples.
    """
    if len(texts) < 2:
        return math.nan
    counts = Counter(texts)
    return sum(c for c in counts.values() if c > 1) / len(texts)


def compression_ratio(texts: Sequence[str]) -> float:
    """Raw bytes / gzip bytes of the newline-joined samples (Shaib et al., "Standardizing the Measurement of Text
    Diversity", arXiv 2403.00553). Higher = more redundant = less diverse.

    The text is compressed once; `mtime=0` makes the gzip header deterministic.
    """
    raw = _JOIN.join(texts).encode("utf-8")
    if not raw:
        return math.nan
    return len(raw) / len(gzip.compress(raw, mtime=0))


def length_mean(lengths: Sequence[int]) -> float:
    """Mean sample length (in policy tokens); NaN when there are no samples."""
    return statistics.fmean(lengths) if lengths else math.nan


def length_std(lengths: Sequence[int]) -> float:
    """Population standard deviation of the sample lengths; NaN when there are no samples."""
    return statistics.pstdev(lengths) if lengths else math.nan
