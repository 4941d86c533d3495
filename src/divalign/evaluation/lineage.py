"""Offline diversity evaluation of a model lineage (e.g. base → SFT → DPO): `evaluate_lineage`, behind `divalign eval`.

Each model samples K completions per prompt through `divalign.generation`; `divalign.diversity` scores them; the
results are written by `report.py`. With a verifier: quality, diversity over correct samples only and the split of
the drop (`diversity/quality_split.py`); with temperatures: the frontier (`frontier_sweep.py`); with an embedder: the semantic
views (`semantic_views.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..diversity import DEFAULT_EVAL_METRICS, DEFAULT_NLI_MODEL, NLIScorer, validate_metrics
from ..diversity.aggregate import summarize_with_ci
from ..diversity.clusters import DEFAULT_CLUSTER_THRESHOLD
from ..diversity.embedding import CachedEmbedder
from ..diversity.profile import (
    DEFAULT_PROFILE,
    MetricProfile,
    embedding_model_for,
    get_profile,
    load_profile_embedder,
)
from ..diversity.quality_split import quality_split, score_quality
from ..diversity.registry import DiversityScores, check_requirements, metric_needs, score_groups
from ..generation import SamplingSettings
from ..prompts import PromptRecord, load_prompts
from ..user_code import checked_verifier, load_verifier
from .frontier_sweep import (
    AnswerVerifier,
    QualityScorer,
    frontier_point,
    frontier_results,
    frontier_setup,
    temperature_sweep,
)
from .output_dir import check_out_dir, incomplete_output
from .quality import load_quality, prompt_quality
from .report import write_results, write_samples
from .sampling import EvalSampling, Samples, check_model_path, check_sampling, open_sampler
from .semantic_views import semantic_views

if TYPE_CHECKING:
    from ..rewards.quality import Quality

_ANSWER_METRICS = ("unique_answers", "pass_at_1", "pass_at_k")


def _stats(scores: DiversityScores, n_bootstrap: int, seed: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in scores.per_prompt.items():
        out[name] = summarize_with_ci(values, n_bootstrap, seed)
        if name in scores.across:
            out[name]["across"] = scores.across[name]
    return out


def _lists(scores: DiversityScores) -> dict[str, list[float]]:
    """Per-prompt values, kept in results.json so any aggregate can be recomputed or paired later."""
    return {name: values.tolist() for name, values in scores.per_prompt.items()}


def _score_model(
    samples: Samples,
    records: list[PromptRecord],
    metrics: list[str],
    resources: dict[str, Any],
    n_bootstrap: int,
    seed: int,
    verifier: AnswerVerifier | None,
) -> dict[str, Any]:
    common = {"vocab_size": samples.vocab_size, **resources}
    correct: list[list[bool]] = []
    if verifier is not None:
        # Each sample is verified once (verifiers may run code); pass@k then reads the memoised verdicts.
        correct = [[bool(verifier(t, records[i].answer)) for t in g] for i, g in enumerate(samples.texts)]
        verdicts = [dict(zip(g, c, strict=True)) for g, c in zip(samples.texts, correct, strict=True)]
    scores = score_groups(
        samples.texts,
        samples.token_ids,
        metrics=metrics,
        verifier=(lambda text, i: verdicts[i][text]) if verifier else None,
        **common,
    )
    result: dict[str, Any] = {"metrics": _stats(scores, n_bootstrap, seed), "per_prompt": {"all": _lists(scores)}}
    if verifier is None:
        return result
    verdicts_as_quality = [[float(c) for c in group] for group in correct]
    quality = score_quality(samples.texts, samples.token_ids, verdicts_as_quality, correct, metrics, **common)
    accuracy = quality.quality.tolist()
    result["quality"] = summarize_with_ci(accuracy, n_bootstrap, seed)
    result["correct_only"] = _stats(quality.correct_only, n_bootstrap, seed)
    result["per_prompt"]["correct_only"] = _lists(quality.correct_only)
    result["per_prompt"]["accuracy"] = accuracy
    return result


def _sample_file(name: str, t: float, temperature: float) -> str:
    """The name of a model's samples at temperature `t` (`samples/<name>.jsonl`; `<name>@T<t>` off the main one)."""
    return name if t == temperature else f"{name}@T{t:g}"


def _quality_entry(
    entry: dict[str, Any],
    quality: Quality,
    records: list[PromptRecord],
    samples: Samples,
    label: str,
    n_bootstrap: int,
    seed: int,
) -> list[float]:
    """`--quality` next to the diversity of the main temperature: its per-prompt means into `entry`, returned."""
    per_prompt = prompt_quality(quality, records, samples, label)
    entry["quality_score"] = {"name": quality.name, **summarize_with_ci(per_prompt, n_bootstrap, seed)}
    entry["per_prompt"]["quality_score"] = per_prompt
    return per_prompt


def _resolve_metrics(
    metrics: Sequence[str] | None, has_verifier: bool, num_samples: int, profile: MetricProfile
) -> list[str]:
    """Metric names to compute, checked before any sampling (a missing verifier must not surface hours later)."""
    if metrics is None:
        return list(DEFAULT_EVAL_METRICS) + (list(_ANSWER_METRICS) if has_verifier else [])
    names = validate_metrics(metrics)
    available = {"token_ids", "vocab_size", "embedder", "nli_scorer"} | ({"verifier"} if has_verifier else set())
    check_requirements(names, available, profile)
    too_large = [n for n in names if n.startswith("pass_at_") and n[8:].isdigit() and int(n[8:]) > num_samples]
    if too_large:
        raise ValueError(f"Metrics {too_large} need more than --samples {num_samples} samples per prompt")
    return names


def _load_resources(
    metrics: list[str], profile: MetricProfile, embedding_model: str | None, nli_model: str, device: str | None
) -> dict[str, Any]:
    """Load the embedder / NLI model before sampling, so a bad name fails in seconds, not after hours of sampling."""
    resources: dict[str, Any] = {}
    if any("embedder" in metric_needs(m, profile) for m in metrics):
        resources["embedder"] = CachedEmbedder(load_profile_embedder(profile, embedding_model, device=device))
    if any("nli_scorer" in metric_needs(m, profile) for m in metrics):
        scorer = NLIScorer(nli_model, device=device)
        scorer.load()
        resources["nli_scorer"] = scorer
    return resources


def evaluate_lineage(
    models: list[tuple[str, str]],
    prompts_path: str | Path,
    *,
    prompts_split: str = "test",
    prompts_column: str | None = None,
    answer_column: str | None = None,
    num_prompts: int | None = None,
    num_samples: int = 16,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    temperatures: Sequence[float] | None = None,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    profile: str = DEFAULT_PROFILE,
    embedding_model: str | None = None,
    cluster_threshold: float = DEFAULT_CLUSTER_THRESHOLD,
    nli_model: str = DEFAULT_NLI_MODEL,
    verifier: str | AnswerVerifier | None = None,
    quality: str | QualityScorer | None = None,
    frontier_metric: str | None = None,
    reference: str | None = None,
    backend: str = "auto",
    batch_size: int = 8,
    device: str | None = None,
    n_bootstrap: int = 1000,
    out_dir: str | Path = "eval_results",
    move_aside: bool = False,
) -> dict[str, Any]:
    """Sample from each (name, path) model in lineage order, score diversity, write results into `out_dir`.

    `prompts_path` is anything `divalign.prompts.load_prompts` reads (file, saved dataset, Hub id with
    `prompts_split` / `prompts_column`). `verifier` is `module:function` or a callable
    `fn(completion, reference_answer) -> bool`; the reference is the prompt's answer column. `quality` (a reward name
    of `divalign.rewards`, `reward_model:PATH`, a JSON `{name: settings}`, `module:function` or a callable
    `fn(completion, answer) -> float`; `divalign.evaluation.quality`) scores every sample: each model's mean at
    `temperature` is reported next to its diversity. With `temperatures` every model is also sampled at each of
    them, and its quality (the mean score of `quality`, else the verifier's accuracy) is set against the diversity
    metric `frontier_metric`. `reference` names the model the others are compared with (the matched-diversity
    differences and the quality-control/narrowing split); default: the first.
    `profile` names the metric conventions (`divalign.diversity.profile.PROFILES`); `embedding_model` defaults to
    the profile's embedder; `cluster_threshold` is the cosine at which samples share a semantic cluster.
    `out_dir` must be empty or absent, unless `move_aside` moves the earlier one aside. Returns the dict written
    to results.json.
    """
    if not models:
        raise ValueError("evaluate_lineage needs at least one model")
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"Model names must be unique, got {names}")
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(f"--reference {reference!r} is none of the models: {names}")
    settings = SamplingSettings(
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        batch_size=batch_size,
    )
    sampling = EvalSampling(settings=settings, backend=backend, device=device)
    check_sampling(sampling, list(temperatures or []))
    for name, path in models:
        check_model_path(name, path)
    records = load_prompts(
        prompts_path, split=prompts_split, column=prompts_column, answer_column=answer_column, limit=num_prompts
    )
    conventions = get_profile(profile)
    if not -1.0 <= cluster_threshold <= 1.0:
        raise ValueError(f"--cluster-threshold must be a cosine similarity in [-1, 1], got {cluster_threshold}")
    answer_verifier = (
        load_verifier(verifier)
        if isinstance(verifier, str)
        else checked_verifier(verifier, getattr(verifier, "__name__", repr(verifier)))
        if verifier is not None
        else None
    )
    metric_names = _resolve_metrics(metrics, answer_verifier is not None, num_samples, conventions)
    scored_quality = None if quality is None else load_quality(quality, records)
    frontier = frontier_setup(temperatures, metric_names, frontier_metric, answer_verifier, scored_quality)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, move_aside)
    resources = _load_resources(metric_names, conventions, embedding_model, nli_model, device)
    scoring = {**resources, "profile": conventions, "cluster_threshold": cluster_threshold}
    sweep = temperature_sweep(temperature, temperatures) if frontier else [temperature]
    results: dict[str, Any] = {
        "config": {
            "metrics": metric_names,
            "num_prompts": len(records),
            "num_samples": num_samples,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "temperatures": sweep,
            "top_p": top_p,
            "top_k": top_k,
            "seed": seed,
            "batch_size": batch_size,
            "prompts": str(prompts_path),
            "prompts_split": prompts_split,
            "profile": conventions.name,
            "profile_settings": conventions.settings(),
            "embedding_model": embedding_model_for(conventions, embedding_model) if "embedder" in resources else None,
            "cluster_threshold": cluster_threshold,
            "verifier": None if verifier is None else str(verifier),
            "quality": None if quality is None else str(quality),
            "reference": reference,
        },
        "models": [],
    }
    with incomplete_output(out_dir, [_sample_file(name, t, temperature) for name, _ in models for t in sweep]):
        texts_by_model: dict[str, list[list[str]]] = {}
        for name, path in models:
            sampler = open_sampler(name, path, sampling)
            try:
                entry: dict[str, Any] = {"name": name, "path": path}
                by_temperature = {}
                for t in sweep:
                    samples = sampler.sample(records, dataclasses.replace(settings, temperature=t))
                    write_samples(
                        out_dir,
                        _sample_file(name, t, temperature),
                        [r.prompt for r in records],
                        samples.texts,
                        samples.token_ids,
                    )
                    label, quality_here = f"{name} (T={t:g})", None
                    if t == temperature:
                        entry.update(
                            _score_model(samples, records, metric_names, scoring, n_bootstrap, seed, answer_verifier)
                        )
                        texts_by_model[name] = samples.texts
                        if scored_quality is not None:
                            quality_here = _quality_entry(
                                entry, scored_quality, records, samples, label, n_bootstrap, seed
                            )
                    if frontier:
                        reuse = quality_here if frontier.quality is scored_quality else None
                        by_temperature[f"{t:g}"] = frontier_point(samples, records, frontier, scoring, label, reuse)
            finally:
                sampler.close()
            if frontier:
                entry["per_prompt"]["frontier"] = by_temperature
            results["models"].append(entry)
        if answer_verifier is not None:
            base = results["models"][names.index(reference)]
            for model in results["models"]:
                if model is not base:
                    model["split"] = quality_split(base, model)
        if frontier:
            results["frontier"] = frontier_results(results, frontier, reference, n_bootstrap, seed)
        if "embedder" in resources:
            results.update(semantic_views(texts_by_model, resources["embedder"], conventions, n_bootstrap, seed))
        results["files"] = {k: str(v) for k, v in write_results(results, out_dir).items()}
    return results
