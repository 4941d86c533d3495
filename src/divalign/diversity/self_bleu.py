"""Self-BLEU (Zhu et al., "Texygen", SIGIR 2018): how much each sample overlaps with the other samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from sacrebleu.metrics import BLEU


@lru_cache(maxsize=1)
def _bleu() -> BLEU:
    # effective_order: sentence-level BLEU of short texts would otherwise be 0 whenever a 4-gram precision is 0.
    return BLEU(effective_order=True)


def self_bleu(texts: Sequence[str]) -> float:
    """Mean over i of sentence BLEU(y_i; every other sample as a separate reference), scaled to [0, 1].

    Each other sample is passed as its own reference (sacrebleu's `sentence_score(hyp, refs)` takes one string per
    reference). Passing the others as one *stream* (`corpus_bleu([hyp], [others])`) silently scores against the first
    of them only. Higher = less diverse. NaN for fewer than two samples.
    """
    if len(texts) < 2:
        return math.nan
    scores = [
        _bleu().sentence_score(hyp, [t for j, t in enumerate(texts) if j != i]).score for i, hyp in enumerate(texts)
    ]
    return sum(scores) / len(scores) / 100.0
