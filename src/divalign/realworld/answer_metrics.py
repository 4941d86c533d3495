"""Quality and diversity of sampled answers measured by the verifier: what the valid sets make possible.

Per prompt, over its K samples (each one a verdict of :func:`divalign.realworld.verifier.identify`):

* ``validity``: the share of samples that name exactly one valid item;
* ``distinct_valid``: how many different valid items the samples name;
* ``coverage``: ``distinct_valid`` over the size of the category's valid set;
* ``entropy``: Shannon entropy (nats) of the named items over the valid samples (undefined without one);
* ``outside_head``: for a category SFT saw, the share of valid samples naming an item outside the SFT data's head
  (undefined without a valid sample): how much of the model's own knowledge beyond the SFT answers survives.

Per category, the samples of all its phrasings pooled: ``category_coverage`` (different valid items named over the
valid set's size).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from ..distributions import entropy as distribution_entropy
from .catalog import category
from .verifier import identify

PROMPT_METRICS: tuple[str, ...] = ("validity", "distinct_valid", "coverage", "entropy", "outside_head")


def entropy(counts: Sequence[int]) -> float:
    """Shannon entropy (nats) of the distribution the counts give; NaN when they sum to 0."""
    total = sum(counts)
    if total == 0:
        return math.nan
    return distribution_entropy([c / total for c in counts])


def named_items(texts: Sequence[str], category_key: str) -> list[str | None]:
    """The valid item each sample names (None for an invalid sample)."""
    return [identify(text, category_key).item for text in texts]


def prompt_scores(texts: Sequence[str], category_key: str, head: Sequence[str] | None = None) -> dict[str, float]:
    """The per-prompt metrics of one prompt's samples (``outside_head`` NaN when no `head` is given)."""
    if not texts:
        raise ValueError(f"no samples to score for a {category_key!r} prompt")
    items = [item for item in named_items(texts, category_key) if item is not None]
    counts = Counter(items)
    outside = math.nan
    if head is not None and items:
        outside = sum(item not in set(head) for item in items) / len(items)
    return {
        "validity": len(items) / len(texts),
        "distinct_valid": float(len(counts)),
        "coverage": len(counts) / len(category(category_key).items),
        "entropy": entropy(list(counts.values())),
        "outside_head": outside,
    }


def score_groups(
    groups: Sequence[Sequence[str]], category_keys: Sequence[str], heads: dict[str, Sequence[str]] | None = None
) -> dict[str, list[float]]:
    """Per-prompt lists of every metric, for prompts `groups[i]` of category `category_keys[i]`; `heads` maps a
    seen category to its SFT head."""
    if len(groups) != len(category_keys):
        raise ValueError(f"{len(groups)} sample groups but {len(category_keys)} category keys")
    heads = heads or {}
    rows = [prompt_scores(g, k, heads.get(k)) for g, k in zip(groups, category_keys, strict=True)]
    return {name: [row[name] for row in rows] for name in PROMPT_METRICS}


def category_coverage(groups: Sequence[Sequence[str]], category_keys: Sequence[str]) -> dict[str, float]:
    """Per category: different valid items named by all samples of all its prompts, over the valid set's size."""
    named: dict[str, set[str]] = {}
    for group, key in zip(groups, category_keys, strict=True):
        named.setdefault(key, set()).update(item for item in named_items(group, key) if item is not None)
    return {key: len(items) / len(category(key).items) for key, items in named.items()}
