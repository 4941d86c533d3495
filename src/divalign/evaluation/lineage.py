"""Offline diversity evaluation of a model lineage (e.g. base → SFT → DPO): `evaluate_lineage`, behind `divalign eval`.

Each model samples K completions per prompt through `divalign.generation`; `divalign.diversity` scores them; the
results are written by `report.py`. With a verifier: quality, diversity over correct samples only and the split of
the drop (`diversity/quality_split.py`); with temperatures: the frontier (`frontier_sweep.py`); with an embedder: the semantic
views (`semantic_views.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..diversity import DEFAULT_EVAL_METRICS, NLIScorer, validate_metrics
from ..diversity.aggregate import summarize_with_ci
from ..diversity.embedding import CachedEmbedder
from ..diversity.profile import (
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
    FrontierSetup,
    frontier_point,
    frontier_results,
    frontier_setup,
    temperature_sweep,
)
from .options import EvalOptions
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


@dataclass(frozen=True)
class _Run:
    """What every model of one evaluation is sampled and scored with, prepared and checked before any sampling."""

    options: EvalOptions
    records: list[PromptRecord]
    settings: SamplingSettings
    sampling: EvalSampling
    profile: MetricProfile
    verifier: AnswerVerifier | None
    metrics: list[str]
    quality: Quality | None
    frontier: FrontierSetup | None
    out_dir: Path
    resources: dict[str, Any]
    sweep: list[float]

    @property
    def scoring(self) -> dict[str, Any]:
        return {**self.resources, "profile": self.profile, "cluster_threshold": self.options.cluster_threshold}


def _checked_reference(models: list[tuple[str, str]], reference: str | None) -> str:
    """The model the others are compared with (default: the first), with the model names checked."""
    if not models:
        raise ValueError("evaluate_lineage needs at least one model")
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"Model names must be unique, got {names}")
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(f"--reference {reference!r} is none of the models: {names}")
    return reference


def _answer_verifier(verifier: str | AnswerVerifier | None) -> AnswerVerifier | None:
    if isinstance(verifier, str):
        return load_verifier(verifier)
    return None if verifier is None else checked_verifier(verifier, getattr(verifier, "__name__", repr(verifier)))


def _prepare(models: list[tuple[str, str]], prompts_path: str | Path, options: EvalOptions) -> _Run:
    """Every setting, model path, prompt, verifier, metric, quality and the output directory checked, and the
    scorers loaded, before any model samples: a bad value fails in seconds, not after hours of sampling."""
    o = options
    fields = ("num_samples", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "batch_size")
    settings = SamplingSettings(**{name: getattr(o, name) for name in fields})
    sampling = EvalSampling(settings=settings, backend=o.backend, device=o.device)
    check_sampling(sampling, list(o.temperatures or []))
    for name, path in models:
        check_model_path(name, path)
    records = load_prompts(
        prompts_path, split=o.prompts_split, column=o.prompts_column, answer_column=o.answer_column, limit=o.num_prompts
    )
    profile = get_profile(o.profile)
    if not -1.0 <= o.cluster_threshold <= 1.0:
        raise ValueError(f"--cluster-threshold must be a cosine similarity in [-1, 1], got {o.cluster_threshold}")
    verifier = _answer_verifier(o.verifier)
    metrics = _resolve_metrics(o.metrics, verifier is not None, o.num_samples, profile)
    quality = None if o.quality is None else load_quality(o.quality, records)
    frontier = frontier_setup(o.temperatures, metrics, o.frontier_metric, verifier, quality)
    out_dir = Path(o.out_dir)
    check_out_dir(out_dir, o.move_aside)
    resources = _load_resources(metrics, profile, o.embedding_model, o.nli_model, o.device)
    sweep = temperature_sweep(o.temperature, o.temperatures) if frontier else [o.temperature]
    return _Run(
        o, records, settings, sampling, profile, verifier, metrics, quality, frontier, out_dir, resources, sweep
    )


def _config_record(run: _Run, prompts_path: str | Path, reference: str) -> dict[str, Any]:
    """results.json's `config`: what the evaluation ran with."""
    o = run.options
    embedder = "embedder" in run.resources
    return {
        "metrics": run.metrics,
        "num_prompts": len(run.records),
        "num_samples": o.num_samples,
        "max_new_tokens": o.max_new_tokens,
        "temperature": o.temperature,
        "temperatures": run.sweep,
        "top_p": o.top_p,
        "top_k": o.top_k,
        "seed": o.seed,
        "batch_size": o.batch_size,
        "prompts": str(prompts_path),
        "prompts_split": o.prompts_split,
        "profile": run.profile.name,
        "profile_settings": run.profile.settings(),
        "embedding_model": embedding_model_for(run.profile, o.embedding_model) if embedder else None,
        "cluster_threshold": o.cluster_threshold,
        "verifier": None if o.verifier is None else str(o.verifier),
        "quality": None if o.quality is None else str(o.quality),
        "reference": reference,
    }


def _evaluate_model(run: _Run, name: str, path: str) -> tuple[dict[str, Any], list[list[str]]]:
    """One model sampled at every temperature of the sweep (its samples written), scored at the main one: its
    results.json entry and its main samples."""
    o, scoring = run.options, run.scoring
    sampler = open_sampler(name, path, run.sampling)
    try:
        entry: dict[str, Any] = {"name": name, "path": path}
        by_temperature = {}
        for t in run.sweep:
            samples = sampler.sample(run.records, dataclasses.replace(run.settings, temperature=t))
            prompts = [r.prompt for r in run.records]
            write_samples(run.out_dir, _sample_file(name, t, o.temperature), prompts, samples.texts, samples.token_ids)
            label, quality_here = f"{name} (T={t:g})", None
            if t == o.temperature:
                entry.update(
                    _score_model(samples, run.records, run.metrics, scoring, o.n_bootstrap, o.seed, run.verifier)
                )
                texts = samples.texts
                if run.quality is not None:
                    quality_here = _quality_entry(
                        entry, run.quality, run.records, samples, label, o.n_bootstrap, o.seed
                    )
            if run.frontier:
                reuse = quality_here if run.frontier.quality is run.quality else None
                by_temperature[f"{t:g}"] = frontier_point(samples, run.records, run.frontier, scoring, label, reuse)
    finally:
        sampler.close()
    if run.frontier:
        entry["per_prompt"]["frontier"] = by_temperature
    return entry, texts


def evaluate_lineage(
    models: list[tuple[str, str]], prompts_path: str | Path, options: EvalOptions | None = None, **settings: Any
) -> dict[str, Any]:
    """Sample from each (name, path) model in lineage order, score diversity, write results into the options' `out_dir`.

    `prompts_path` is anything `divalign.prompts.load_prompts` reads (file, saved dataset, Hub id with the options'
    `prompts_split` / `prompts_column`). `options` (:class:`~divalign.evaluation.options.EvalOptions`, what the flags
    of `divalign eval` set) says how to sample, score and write; keyword `settings` are its fields, set over
    `options` or the defaults (``evaluate_lineage(models, path, num_samples=8, out_dir="eval")``). Returns the dict
    written to results.json.
    """
    options = dataclasses.replace(options or EvalOptions(), **settings)
    reference = _checked_reference(models, options.reference)
    run = _prepare(models, prompts_path, options)
    results: dict[str, Any] = {"config": _config_record(run, prompts_path, reference), "models": []}
    files = [_sample_file(name, t, options.temperature) for name, _ in models for t in run.sweep]
    with incomplete_output(run.out_dir, files):
        texts_by_model: dict[str, list[list[str]]] = {}
        for name, path in models:
            entry, texts_by_model[name] = _evaluate_model(run, name, path)
            results["models"].append(entry)
        if run.verifier is not None:
            base = results["models"][[n for n, _ in models].index(reference)]
            for model in results["models"]:
                if model is not base:
                    model["split"] = quality_split(base, model)
        if run.frontier:
            results["frontier"] = frontier_results(results, run.frontier, reference, options.n_bootstrap, options.seed)
        if "embedder" in run.resources:
            views = semantic_views(
                texts_by_model, run.resources["embedder"], run.profile, options.n_bootstrap, options.seed
            )
            results.update(views)
        results["files"] = {k: str(v) for k, v in write_results(results, run.out_dir).items()}
    return results
