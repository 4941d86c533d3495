"""What one training-time evaluation of the probe set logs, computed on the main process from the sampled groups:
the diversity metrics, and with a quality (:mod:`divalign.rewards.quality`) its mean, pass@1 / pass@K and the
diversity over correct samples only; against the step-0 reference (:mod:`divalign.callback.state`) the retained
ratios and the quality-control / narrowing split. Quality, correct-only diversity and the split go through
:mod:`divalign.diversity.quality_split`, the code `divalign eval` uses.

Keys (each logged as ``diversity/<key>``): ``<metric>`` (and ``_p10`` / ``_p90`` / ``_across``), ``quality/mean``,
``quality/pass_at_1``, ``quality/pass_at_k``, ``correct_only/<metric>``, ``correct_only/num_prompts``,
``retained/<metric>``, ``quality_control/<metric>``, ``narrowing/<metric>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..diversity.aggregate import summarize
from ..diversity.quality_split import diversity_metrics, score_quality, split_drop
from ..diversity.registry import REGISTRY, score_groups
from .state import PerPrompt, Reference

PASS_METRICS = ("pass_at_1", "pass_at_k")


@dataclass
class ProbeScores:
    """One evaluation: the keys to log (without the ``diversity/`` prefix), each diversity metric's mean over prompts
    and its per-prompt values (``all`` samples; ``correct_only`` with verdicts)."""

    logs: dict[str, float]
    means: dict[str, float]
    per_prompt: PerPrompt


def score_probe(
    groups: Sequence[Sequence[str]],
    token_ids: Sequence[Sequence[Sequence[int]]],
    metrics: Sequence[str],
    quality: Sequence[Sequence[float]] | None = None,
    correct: Sequence[Sequence[bool]] | None = None,
    **scoring: Any,
) -> ProbeScores:
    """Score the samples of every probe prompt. ``quality`` is each sample's quality, ``correct`` its verdict (None:
    correctness undefined); ``scoring`` is what :func:`divalign.diversity.registry.score_groups` takes besides the
    samples (``vocab_size``, ``embedder``, ``profile``)."""
    scores = score_groups(groups, token_ids, metrics=metrics, **scoring)
    logs = scores.summary()
    names = diversity_metrics(metrics)
    probe = ProbeScores(logs, {m: logs[m] for m in names}, {"all": {m: scores.per_prompt[m].tolist() for m in names}})
    if quality is not None:
        _add_quality(probe, groups, token_ids, metrics, quality, correct, scoring)
    return probe


def _add_quality(
    probe: ProbeScores,
    groups: Sequence[Sequence[str]],
    token_ids: Sequence[Sequence[Sequence[int]]],
    metrics: Sequence[str],
    quality: Sequence[Sequence[float]],
    correct: Sequence[Sequence[bool]] | None,
    scoring: dict[str, Any],
) -> None:
    scored = score_quality(groups, token_ids, quality, correct, metrics, **scoring)
    probe.logs["quality/mean"] = summarize(scored.quality)["mean"]
    if scored.correct_only is None:
        return
    verdicts = [dict(zip(group, ok, strict=True)) for group, ok in zip(groups, correct, strict=True)]
    passed = score_groups(groups, metrics=list(PASS_METRICS), verifier=lambda text, i: verdicts[i][text]).summary()
    probe.logs.update({f"quality/{name}": passed[name] for name in PASS_METRICS})
    means = scored.correct_only.summary()
    probe.logs.update({f"correct_only/{name}": means[name] for name in scored.correct_only.per_prompt})
    probe.logs["correct_only/num_prompts"] = float(scored.num_prompts)
    probe.per_prompt["correct_only"] = {m: v.tolist() for m, v in scored.correct_only.per_prompt.items()}


def against_reference(probe: ProbeScores, reference: Reference) -> dict[str, float]:
    """``retained/<metric>`` of every metric with a ratio and, where both evaluations have correct-only values,
    ``quality_control/<metric>`` and ``narrowing/<metric>`` of the change since the reference."""
    logs = {f"retained/{name}": value for name, value in reference.retained(probe.means).items()}
    base, now = reference.per_prompt, probe.per_prompt
    if "correct_only" not in base or "correct_only" not in now:
        return logs
    for name in now["correct_only"]:
        if name not in base["correct_only"] or name not in base["all"]:
            continue
        split = split_drop(
            REGISTRY[name].direction, base["all"][name], now["all"][name], base["correct_only"][name],
            now["correct_only"][name],
        )  # fmt: skip
        logs[f"quality_control/{name}"] = split["quality_control"]
        logs[f"narrowing/{name}"] = split["narrowing"]
    return logs
