"""Self-BLEU (Zhu et al., "Texygen", SIGIR 2018): how much each sample overlaps with the other samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from sacrebleu.metrics import BLEU


@lru_cache(maxsize=2)
def _bleu(lowercase: bool) -> BLEU:
    # effective_order: sentence-level BLEU of short texts would otherwise be 0 whenever a 4-gram precision is 0.
    return BLEU(effective_order=True, lowercase=lowercase)


def self_bleu(
    texts: Sequence[str], *, lowercase: bool = False, newlines_as_spaces: bool = False, scale: float = 1.0
) -> float:
    """Mean over i of sentence BLEU(y_i; every other sample as a separate reference), divided by 100 / `scale`.

    Each other sample is passed as its own reference (sacrebleu's `sentence_score(hyp, refs)` takes one string per
    reference). Passing the others as one *stream* (`corpus_bleu([hyp], [others])`) silently scores against the first
    of them only. Higher = less diverse. NaN for fewer than two samples.

    The defaults are divalign's: case-sensitive, sacrebleu's 13a tokenizer as is (it reads a newline as a space but
    deletes "-\\n", joining a word hyphenated across lines), on [0, 1]. The TOFU authors' evaluation (Klypa &
    Cherednichenko, arXiv 2605.00195) lowercases, replaces every newline by a space first and keeps sacrebleu's
    0–100: `lowercase=True, newlines_as_spaces=True, scale=100` (the `tofu2026` profile).
    """
    if len(texts) < 2:
        return math.nan
    if newlines_as_spaces:
        texts = [t.replace("\n", " ") for t in texts]
    bleu = _bleu(lowercase)
    scores = [bleu.sentence_score(hyp, [t for j, t in enumerate(texts) if j != i]).score for i, hyp in enumerate(texts)]
    return sum(scores) / len(scores) / 100.0 * scale
