"""The metrics a training run computes by itself: known names, none that needs a verifier or an NLI model (those are
`divalign eval`'s), and an embedding model named for the semantic ones. The one check behind the diversity callback's
`metrics` and GRPO's `rollout_diversity_metrics`; each caller words its errors for its own keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from .registry import METRIC_NAMES, REGISTRY

OFFLINE_NEEDS = frozenset({"verifier", "nli_scorer"})  # what no training run has


def check_training_metrics(
    metrics: Sequence[str], embedding_model: str | None, *, unknown: str, offline: str, semantic: str
) -> None:
    """Raise a ``ValueError`` for unknown names, metrics that need a verifier or an NLI model, and semantic metrics
    without an ``embedding_model``. ``unknown``, ``offline`` and ``semantic`` are the errors' texts, formatted with
    ``names`` (the metrics at fault) and ``valid`` (every metric name)."""
    checks = (  # in this order: the later ones look the names up
        (unknown, lambda name: name not in METRIC_NAMES),
        (offline, lambda name: bool(REGISTRY[name].needs & OFFLINE_NEEDS)),
        (semantic, lambda name: not embedding_model and "embedder" in REGISTRY[name].needs),
    )
    for text, fails in checks:
        names = [name for name in metrics if fails(name)]
        if names:
            raise ValueError(text.format(names=names, valid=list(METRIC_NAMES)))
