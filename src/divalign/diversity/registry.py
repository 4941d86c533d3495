"""Metric registry and the batch entry points that score the K samples of many prompts at once."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import answers, clusters, embedding, ngrams, nli, self_bleu, surface
from .aggregate import summarize
from .profile import MetricProfile, get_profile

Verifier = Callable[[str, int], bool]


@dataclass
class Group:
    """What a metric sees for one set of samples: the K samples of a prompt, or one sample per prompt."""

    texts: list[str]
    token_ids: list[list[int]] | None = None
    embeddings: np.ndarray | None = None
    correct: list[bool] | None = None


@dataclass
class Context:
    """Resources shared by all groups."""

    vocab_size: int | None = None
    nli_scorer: nli.NLIScorer | None = None
    profile: MetricProfile = field(default_factory=lambda: get_profile(None))
    cluster_threshold: float = clusters.DEFAULT_CLUSTER_THRESHOLD


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[Group, Context], float]
    needs: frozenset[str] = frozenset()  # subset of {"token_ids", "vocab_size", "embedder", "verifier", "nli_scorer"}
    across: bool = True  # whether one-sample-per-prompt scoring makes sense
    direction: int = 1  # +1: higher = more diverse, −1: higher = less diverse, 0: not a diversity score


def _distinct(n: int, prefix: bool) -> Callable[[Group, Context], float]:
    def fn(group: Group, ctx: Context) -> float:
        ids = ngrams.truncate_to_common_length(group.token_ids) if prefix else group.token_ids
        return ngrams.distinct_n(ids, n)

    return fn


def _ead(n: int | None) -> Callable[[Group, Context], float]:
    def fn(group: Group, ctx: Context) -> float:
        profile = ctx.profile
        units = [ngrams.paper_words(t) for t in group.texts] if profile.ead_units == "words" else group.token_ids
        if n is None:
            return ngrams.ead_mean(units, ctx.vocab_size, empty_orders=profile.ead_empty_orders, clamp=profile.ead_clamp)
        empty = 0.0 if profile.ead_empty_orders == "zero" else math.nan
        return ngrams.ead(units, n, ctx.vocab_size, empty=empty, clamp=profile.ead_clamp)

    return fn


def _nli(group: Group, ctx: Context) -> float:
    pairs = ctx.profile.nli_sentence_pairs
    if pairs:
        return nli.nli_sentence_diversity(group.texts, ctx.nli_scorer, max_pairs=pairs)
    return nli.nli_diversity(group.texts, ctx.nli_scorer)


def _self_bleu(group: Group, ctx: Context) -> float:
    profile = ctx.profile
    return self_bleu.self_bleu(
        group.texts,
        lowercase=profile.self_bleu_lowercase,
        newlines_as_spaces=profile.self_bleu_newlines_as_spaces,
        scale=profile.self_bleu_scale,
    )


def _semantic_clusters(group: Group, ctx: Context) -> float:
    labels = clusters.embedding_clusters(group.embeddings, ctx.cluster_threshold, group.texts)
    return clusters.cluster_count(labels)


def _pass_at(k: int | None) -> Callable[[Group, Context], float]:
    def fn(group: Group, ctx: Context) -> float:
        n = len(group.correct)
        if n == 0:
            return math.nan
        return answers.pass_at_k(n, sum(group.correct), n if k is None else k)

    return fn


def _build_registry() -> dict[str, Metric]:
    tok, emb = frozenset({"token_ids"}), frozenset({"embedder"})
    metrics = [Metric(f"distinct_{n}", _distinct(n, False), tok) for n in range(1, 5)]
    metrics += [Metric(f"distinct_{n}_prefix", _distinct(n, True), tok) for n in range(1, 5)]
    metrics.append(Metric("ead", _ead(None), tok | {"vocab_size"}))
    metrics += [Metric(f"ead_{n}", _ead(n), tok | {"vocab_size"}) for n in range(1, 6)]
    metrics += [
        Metric("exact_dup_rate", lambda g, c: surface.exact_dup_rate(g.texts), direction=-1),
        Metric("compression_ratio", lambda g, c: surface.compression_ratio(g.texts), direction=-1),
        Metric("length_mean", lambda g, c: surface.length_mean([len(t) for t in g.token_ids]), tok, False, 0),
        Metric("length_std", lambda g, c: surface.length_std([len(t) for t in g.token_ids]), tok, False, 0),
        Metric("sbert", lambda g, c: embedding.sbert_diversity(g.embeddings), emb),
        Metric("vendi_1", lambda g, c: embedding.vendi_score(g.embeddings, 1.0), emb),
        Metric("vendi_inf", lambda g, c: embedding.vendi_score(g.embeddings, math.inf), emb),
        Metric("self_bleu", _self_bleu, direction=-1),
        Metric("nli", _nli, frozenset({"nli_scorer"})),
        Metric("semantic_clusters", _semantic_clusters, emb, across=False),
        Metric(
            "semantic_clusters_nli",
            lambda g, c: clusters.cluster_count(clusters.nli_clusters(g.texts, c.nli_scorer)),
            frozenset({"nli_scorer"}),
            across=False,
        ),
        Metric("unique_answers", lambda g, c: answers.unique_answers(g.texts), across=False),
    ]
    verified = frozenset({"verifier"})
    metrics += [Metric(f"pass_at_{k}", _pass_at(k), verified, False, 0) for k in (1, 2, 4, 8, 16)]
    metrics.append(Metric("pass_at_k", _pass_at(None), verified, False, 0))
    return {m.name: m for m in metrics}


REGISTRY: dict[str, Metric] = _build_registry()
METRIC_NAMES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_TRAINING_METRICS: tuple[str, ...] = (
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "distinct_4",
    "ead",
    "exact_dup_rate",
    "compression_ratio",
    "length_mean",
    "sbert",
    "vendi_1",
)
# Everything that needs no NLI model and no verifier; `divalign eval` adds the answer metrics when given a verifier.
DEFAULT_EVAL_METRICS: tuple[str, ...] = tuple(
    name for name, m in REGISTRY.items() if not m.needs & {"nli_scorer", "verifier"} and name != "unique_answers"
)


def validate_metrics(metrics: Sequence[str]) -> list[str]:
    """Deduplicated metric names in order; ValueError naming any unknown one."""
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in REGISTRY]
    if unknown:
        raise ValueError(f"Unknown diversity metric(s) {unknown}; valid names: {', '.join(METRIC_NAMES)}")
    return list(dict.fromkeys(metrics))


def metric_needs(name: str, profile: MetricProfile | None = None) -> frozenset[str]:
    """The resources metric `name` needs under `profile` (EAD over words needs no token ids)."""
    needs = REGISTRY[name].needs
    if name.startswith("ead") and profile is not None and profile.ead_units == "words":
        needs = needs - {"token_ids"}
    return needs


def check_requirements(names: Sequence[str], available: set[str], profile: MetricProfile | None = None) -> None:
    """ValueError naming the first metric whose resources (token_ids, embedder, ...) are not in `available`."""
    hints = {
        "token_ids": "token_ids (the policy's token ids of every sample)",
        "vocab_size": "vocab_size (the tokenizer's vocabulary size, e.g. len(tokenizer))",
        "embedder": "an embedder (e.g. divalign.diversity.load_embedder('all-MiniLM-L6-v2'))",
        "verifier": "a verifier(sample_text, prompt_index) -> bool",
        "nli_scorer": "an nli_scorer (divalign.diversity.NLIScorer(model_name_or_path))",
    }
    for name in names:
        missing = sorted(metric_needs(name, profile) - available)
        if missing:
            raise ValueError(f"Metric {name!r} needs {' and '.join(hints[m] for m in missing)}, which was not given.")


def _check_shapes(groups: Sequence[Sequence[str]], token_ids: Sequence[Sequence[Sequence[int]]] | None) -> None:
    if isinstance(groups, str) or any(isinstance(g, str) for g in groups):
        raise ValueError("groups must be a sequence of per-prompt sequences of sample strings, not strings")
    if token_ids is None:
        return
    if len(token_ids) != len(groups) or any(len(t) != len(g) for t, g in zip(token_ids, groups, strict=True)):
        raise ValueError(
            "token_ids must have the same shape as groups (one id list per sample per prompt); got "
            f"{[len(t) for t in token_ids]} id lists for {[len(g) for g in groups]} samples"
        )


@dataclass
class DiversityScores:
    """Per-prompt values (one array entry per prompt) and across-prompt values of each requested metric."""

    per_prompt: dict[str, np.ndarray] = field(default_factory=dict)
    across: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat dict: `<name>` (mean over prompts), `<name>_p10`, `<name>_p90`, and `<name>_across`."""
        out: dict[str, float] = {}
        for name, values in self.per_prompt.items():
            stats = summarize(values)
            out[name], out[f"{name}_p10"], out[f"{name}_p90"] = stats["mean"], stats["p10"], stats["p90"]
            if name in self.across:
                out[f"{name}_across"] = self.across[name]
        return out


def _build_groups(
    groups: Sequence[Sequence[str]],
    token_ids: Sequence[Sequence[Sequence[int]]] | None,
    embedder: embedding.Embedder | None,
    verifier: Verifier | None,
    profile: MetricProfile,
) -> list[Group]:
    texts = [[profile.prepare_text(t) for t in g] for g in groups]
    built = [Group(texts=t) for t in texts]
    if token_ids is not None:
        for group, ids in zip(built, token_ids, strict=True):
            group.token_ids = [list(x) for x in ids]
    if embedder is not None:
        # One encode call for every sample of every prompt: batching across prompts is what makes this cheap.
        flat = [t for g in texts for t in g]
        emb = np.asarray(embedder.encode(flat))
        if emb.shape[0] != len(flat):
            raise ValueError(f"embedder returned {emb.shape[0]} rows for {len(flat)} texts")
        offsets = np.cumsum([0] + [len(g) for g in texts])
        for i, group in enumerate(built):
            group.embeddings = emb[offsets[i] : offsets[i + 1]]
    if verifier is not None:
        # the verifier judges the whole completion, as generated (the profile prepares texts for the metrics only)
        for i, (group, raw) in enumerate(zip(built, groups, strict=True)):
            group.correct = [bool(verifier(t, i)) for t in raw]
    return built


def _first_samples(groups: list[Group]) -> Group:
    """One sample per prompt (the first), for the across-prompt variant; prompts without samples are skipped."""
    kept = [g for g in groups if g.texts]
    return Group(
        texts=[g.texts[0] for g in kept],
        token_ids=None if not kept or kept[0].token_ids is None else [g.token_ids[0] for g in kept],
        embeddings=None if not kept or kept[0].embeddings is None else np.stack([g.embeddings[0] for g in kept]),
    )


def _safe(metric: Metric, group: Group, ctx: Context) -> float:
    # Metrics of an empty group are undefined; NaN is skipped by the aggregation instead of raising mid-training.
    return metric.fn(group, ctx) if group.texts else math.nan


def score_groups(
    groups: Sequence[Sequence[str]],
    token_ids: Sequence[Sequence[Sequence[int]]] | None = None,
    *,
    metrics: Sequence[str] = DEFAULT_TRAINING_METRICS,
    vocab_size: int | None = None,
    embedder: embedding.Embedder | None = None,
    verifier: Verifier | None = None,
    nli_scorer: nli.NLIScorer | None = None,
    profile: str | MetricProfile | None = None,
    cluster_threshold: float = clusters.DEFAULT_CLUSTER_THRESHOLD,
) -> DiversityScores:
    """Score every prompt's samples with each metric (per prompt, and across prompts where that makes sense).

    Args:
        groups: per prompt, its K sampled completions (texts).
        token_ids: per prompt, per sample, the policy's token ids of the completion (for distinct-n, EAD, length).
        metrics: names from `METRIC_NAMES`.
        vocab_size: the policy tokenizer's vocabulary size (for EAD).
        embedder: sentence embedder (for `sbert`, `vendi_*`); all samples are embedded in one `encode` call.
        verifier: `verifier(sample_text, prompt_index) -> bool` (for `pass_at_*`).
        nli_scorer: an `NLIScorer` (for `nli`, `semantic_clusters_nli`).
        profile: the metric conventions (`divalign.diversity.profile`: "divalign", the default, "karouzos2026",
            "tofu2026"); texts are prepared by it (e.g. reasoning stripped) before every text metric and embedding.
        cluster_threshold: the cosine at which two samples are one semantic cluster (`semantic_clusters`).
    """
    names = validate_metrics(metrics)
    conventions = get_profile(profile)
    given = {
        "token_ids": token_ids,
        "vocab_size": vocab_size,
        "embedder": embedder,
        "verifier": verifier,
        "nli_scorer": nli_scorer,
    }
    check_requirements(names, {k for k, v in given.items() if v is not None}, conventions)
    _check_shapes(groups, token_ids)
    needs_embeddings = any("embedder" in REGISTRY[n].needs for n in names)
    built = _build_groups(groups, token_ids, embedder if needs_embeddings else None, verifier, conventions)
    ctx = Context(
        vocab_size=vocab_size, nli_scorer=nli_scorer, profile=conventions, cluster_threshold=cluster_threshold
    )
    scores = DiversityScores()
    across_group = _first_samples(built)
    for name in names:
        metric = REGISTRY[name]
        scores.per_prompt[name] = np.array([_safe(metric, g, ctx) for g in built], dtype=np.float64)
        if metric.across:
            scores.across[name] = float(_safe(metric, across_group, ctx))
    return scores


def compute_diversity(
    groups: Sequence[Sequence[str]],
    token_ids: Sequence[Sequence[Sequence[int]]] | None = None,
    **scoring: Any,
) -> dict[str, float]:
    """Diversity of sampled completions, as a flat dict ready for logging: :func:`score_groups`' arguments (the
    metrics, the scorers they need, the profile), its scores summarised.

    Returns:
        `<name>` = mean over prompts, `<name>_p10` / `<name>_p90` = percentiles over prompts, and `<name>_across` =
        the metric over the first sample of each prompt, for metrics where that makes sense. Undefined values
        (e.g. a pairwise metric with K = 1) are NaN and skipped by the aggregation.
    """
    return score_groups(groups, token_ids, **scoring).summary()
