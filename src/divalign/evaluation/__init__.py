"""Offline diversity evaluation of a model lineage (e.g. base → SFT → DPO): `divalign eval` and `evaluate_lineage`.

Each model samples K completions per prompt through `divalign.generation` (the sampling path of the training
callback: neutral settings, noise keyed by seed and prompt); `divalign.diversity` scores them; results are written as
JSON, a markdown table with bootstrap CIs over prompts, and a PNG grid across the lineage. With a verifier it also
reports quality, diversity over correct samples only, and the quality-control vs narrowing split of Karouzos et al.
("Where does output diversity collapse in post-training?", arXiv 2604.16027). With several `--temperatures` it
draws each model's quality–diversity frontier and compares the models at matched diversity (`frontier`). With an
embedder it also reports genuine vs surface diversity: semantic clusters per prompt (a metric), the lineage's
cross-model similarity matrix and each model's within-prompt share of spread (`semantic_views`). `--profile` picks
the metric conventions (`divalign.diversity.profile`); every table says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import set_aside
from ..diversity import DEFAULT_EVAL_METRICS, DEFAULT_NLI_MODEL, REGISTRY, NLIScorer, validate_metrics
from ..diversity.aggregate import bootstrap_ci, summarize
from ..diversity.clusters import DEFAULT_CLUSTER_THRESHOLD
from ..diversity.profile import (
    DEFAULT_PROFILE,
    PROFILE_NAMES,
    MetricProfile,
    embedding_model_for,
    get_profile,
    load_profile_embedder,
)
from ..diversity.registry import DiversityScores, check_requirements, metric_needs, score_groups
from ..generation import SamplingSettings
from .frontier import FrontierCurve, matched_difference
from .prompts import PromptRecord, load_callable, load_prompts, load_verifier
from .report import write_results, write_samples
from .sampling import EvalSampling, Samples, check_model_path, check_sampling, open_sampler
from .semantic_views import semantic_views

__all__ = ["add_parser", "evaluate_lineage", "load_prompts", "parse_model_spec", "run"]

AnswerVerifier = Callable[[str, "str | None"], bool]
QualityScorer = Callable[[str, "str | None"], float]
_ANSWER_METRICS = ("unique_answers", "pass_at_1", "pass_at_k")


class _CachedEmbedder:
    """Memoises embeddings so re-scoring the correct-only subset does not re-encode texts already embedded."""

    def __init__(self, embedder: Any):
        self.embedder = embedder
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, np.asarray(self.embedder.encode(missing)), strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def parse_model_spec(spec: str) -> tuple[str, str]:
    """`NAME=PATH` → (NAME, PATH); a bare PATH is named after its last path component."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, Path(spec.rstrip("/")).name or spec
    if not name or not path:
        raise ValueError(f"--model {spec!r}: expected NAME=PATH")
    return name, path


def _stats(scores: DiversityScores, n_bootstrap: int, seed: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in scores.per_prompt.items():
        low, high = bootstrap_ci(values, n_resamples=n_bootstrap, seed=seed)
        out[name] = {**summarize(values), "ci_low": low, "ci_high": high}
        if name in scores.across:
            out[name]["across"] = scores.across[name]
    return out


def _lists(scores: DiversityScores) -> dict[str, list[float]]:
    """Per-prompt values, kept in results.json so any aggregate can be recomputed or paired later."""
    return {name: values.tolist() for name, values in scores.per_prompt.items()}


def _correct_subset(samples: Samples, correct: list[list[bool]]) -> tuple[list[list[str]], list[list[list[int]]]]:
    texts = [[t for t, ok in zip(g, c, strict=True) if ok] for g, c in zip(samples.texts, correct, strict=True)]
    ids = [[t for t, ok in zip(g, c, strict=True) if ok] for g, c in zip(samples.token_ids, correct, strict=True)]
    return texts, ids


def _paired_mean(values: list[float], mask: np.ndarray) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64)[mask])) if mask.any() else math.nan


def _split(base: dict[str, Any], model: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Diversity drop relative to the base, on all samples vs on correct samples only (Karouzos et al.): the drop
    that survives restricting to correct samples is genuine narrowing, the rest is quality control (the model stops
    producing wrong — and therefore different — answers).

    Both drops are averaged over the same prompts: those where the correct-only value is defined for both models
    (e.g. at least two correct samples for a pairwise metric); otherwise the two drops would average different
    prompt sets and their difference would mix in prompt difficulty.
    """
    out = {}
    for name in model["correct_only"]:
        sign = REGISTRY[name].direction
        per = [
            base["per_prompt"]["all"][name],
            model["per_prompt"]["all"][name],
            base["per_prompt"]["correct_only"][name],
            model["per_prompt"]["correct_only"][name],
        ]
        mask = np.logical_and.reduce([~np.isnan(np.asarray(v, dtype=np.float64)) for v in per])
        base_all, model_all, base_ok, model_ok = (_paired_mean(v, mask) for v in per)
        drop_all, narrowing = sign * (base_all - model_all), sign * (base_ok - model_ok)
        share = narrowing / drop_all if drop_all and not math.isnan(drop_all) else math.nan
        out[name] = {
            "drop_all": drop_all,
            "narrowing": narrowing,
            "quality_control": drop_all - narrowing,
            "narrowing_share": share,
            "num_prompts": int(mask.sum()),
        }
    return out


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
    accuracy = [float(np.mean(c)) if c else math.nan for c in correct]
    low, high = bootstrap_ci(accuracy, n_resamples=n_bootstrap, seed=seed)
    result["quality"] = {**summarize(accuracy), "ci_low": low, "ci_high": high}
    diversity_metrics = [m for m in metrics if REGISTRY[m].direction != 0]
    texts, ids = _correct_subset(samples, correct)
    correct_scores = score_groups(texts, ids, metrics=diversity_metrics, **common)
    result["correct_only"] = _stats(correct_scores, n_bootstrap, seed)
    result["per_prompt"]["correct_only"] = _lists(correct_scores)
    result["per_prompt"]["accuracy"] = accuracy
    return result


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
        resources["embedder"] = _CachedEmbedder(load_profile_embedder(profile, embedding_model, device=device))
    if any("nli_scorer" in metric_needs(m, profile) for m in metrics):
        scorer = NLIScorer(nli_model, device=device)
        scorer.load()
        resources["nli_scorer"] = scorer
    return resources


def _check_out_dir(out_dir: Path, move_aside: bool) -> None:
    """Never write over an earlier evaluation: refuse a non-empty `out_dir`, or move it aside when asked."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--out {out_dir} exists and is not a directory")
        return
    if not move_aside:
        raise ValueError(
            f"--out {out_dir} already holds files (an earlier evaluation?); choose another --out, or pass "
            "--move-aside to keep the old one as <out>.old-<time> and write a new one"
        )
    print(f"divalign eval: moved the earlier {out_dir} aside to {set_aside.move_aside(out_dir)}")


def _temperature_sweep(temperature: float, temperatures: Sequence[float] | None) -> list[float]:
    """The temperatures to sample: the main `temperature` plus the sweep's, ascending, each once."""
    return sorted({float(temperature), *(float(t) for t in temperatures or [])})


def _frontier_setup(
    temperatures: Sequence[float] | None,
    metrics: list[str],
    frontier_metric: str | None,
    verifier: AnswerVerifier | None,
    quality: str | QualityScorer | None,
) -> tuple[str, str, Callable[[str, str | None], float]] | None:
    """(diversity metric, quality name, per-sample quality) of the frontier, checked before any sampling."""
    if not temperatures:
        if frontier_metric or quality:
            raise ValueError("--frontier-metric and --quality belong to a frontier: pass --temperatures T1 T2 ...")
        return None
    if len(set(temperatures)) < 2:
        raise ValueError(f"--temperatures needs at least two different temperatures, got {list(temperatures)}")
    diversity = frontier_metric or next((m for m in metrics if REGISTRY[m].direction != 0), None)
    if diversity is None or diversity not in metrics:
        raise ValueError(
            f"--frontier-metric must be one of the diversity metrics computed (--metrics), got {diversity!r}"
        )
    if REGISTRY[diversity].direction == 0:
        raise ValueError(f"--frontier-metric {diversity!r} is not a diversity metric")
    if quality is not None:
        scorer = load_callable(quality, "Quality scorer") if isinstance(quality, str) else quality
        name = quality if isinstance(quality, str) else getattr(quality, "__name__", "quality")
        return diversity, name, lambda text, answer: float(scorer(text, answer))
    if verifier is None:
        raise ValueError(
            "a frontier needs a quality: --verifier MODULE:FUNCTION (accuracy) or --quality MODULE:FUNCTION"
        )
    return diversity, "accuracy", lambda text, answer: float(bool(verifier(text, answer)))


def _frontier_point(
    samples: Samples,
    records: list[PromptRecord],
    diversity: str,
    quality_fn: Callable[[str, str | None], float],
    resources: dict[str, Any],
) -> dict[str, list[float]]:
    """Per-prompt quality (mean over the K samples) and diversity of one model at one temperature."""
    scores = score_groups(
        samples.texts, samples.token_ids, metrics=[diversity], vocab_size=samples.vocab_size, **resources
    )
    quality = [float(np.mean([quality_fn(t, records[i].answer) for t in g])) for i, g in enumerate(samples.texts)]
    return {"quality": quality, "diversity": scores.per_prompt[diversity].tolist()}


def _frontier_results(
    results: dict[str, Any], setup: tuple[str, str, Any], n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Each model's frontier points (mean [CI] per temperature) and the matched-diversity differences vs the first."""
    diversity, quality_name, _ = setup
    curves = {}
    for model in results["models"]:
        by_t = model["per_prompt"]["frontier"]
        temperatures = sorted(by_t, key=float)
        curves[model["name"]] = FrontierCurve(
            temperatures=[float(t) for t in temperatures],
            quality=np.array([by_t[t]["quality"] for t in temperatures], dtype=np.float64),
            diversity=np.array([by_t[t]["diversity"] for t in temperatures], dtype=np.float64),
        )
        model["frontier"] = [
            {
                "temperature": float(t),
                "quality": _ci(by_t[t]["quality"], n_bootstrap, seed),
                "diversity": _ci(by_t[t]["diversity"], n_bootstrap, seed),
            }
            for t in temperatures
        ]
    names = list(curves)
    comparisons = {
        name: dataclasses.asdict(matched_difference(curves[names[0]], curves[name], n_bootstrap=n_bootstrap, seed=seed))
        for name in names[1:]
    }
    return {"diversity_metric": diversity, "quality": quality_name, "reference": names[0], "comparisons": comparisons}


def _ci(values: list[float], n_bootstrap: int, seed: int) -> dict[str, float]:
    low, high = bootstrap_ci(values, n_resamples=n_bootstrap, seed=seed)
    return {**summarize(values), "ci_low": low, "ci_high": high}


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
    backend: str = "auto",
    batch_size: int = 8,
    device: str | None = None,
    n_bootstrap: int = 1000,
    out_dir: str | Path = "eval_results",
    move_aside: bool = False,
) -> dict[str, Any]:
    """Sample from each (name, path) model in lineage order, score diversity, write results into `out_dir`.

    `prompts_path` is anything `divalign.evaluation.prompts.load_prompts` reads (file, saved dataset, Hub id with
    `prompts_split` / `prompts_column`). `verifier` is `module:function` or a callable
    `fn(completion, reference_answer) -> bool`; the reference is the prompt's answer column. With `temperatures`
    every model is also sampled at each of them, and its quality (verifier accuracy, or the mean of `quality`'s
    per-sample score `fn(completion, answer) -> float`) is set against the diversity metric `frontier_metric`.
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
    answer_verifier = load_verifier(verifier) if isinstance(verifier, str) else verifier
    metric_names = _resolve_metrics(metrics, answer_verifier is not None, num_samples, conventions)
    frontier = _frontier_setup(temperatures, metric_names, frontier_metric, answer_verifier, quality)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, move_aside)
    resources = _load_resources(metric_names, conventions, embedding_model, nli_model, device)
    scoring = {**resources, "profile": conventions, "cluster_threshold": cluster_threshold}
    sweep = _temperature_sweep(temperature, temperatures) if frontier else [temperature]
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
        },
        "models": [],
    }
    texts_by_model: dict[str, list[list[str]]] = {}
    for name, path in models:
        sampler = open_sampler(name, path, sampling)
        try:
            entry: dict[str, Any] = {"name": name, "path": path}
            by_temperature = {}
            for t in sweep:
                samples = sampler.sample(records, dataclasses.replace(settings, temperature=t))
                suffix = "" if t == temperature else f"@T{t:g}"
                write_samples(out_dir, f"{name}{suffix}", [r.prompt for r in records], samples.texts, samples.token_ids)
                if t == temperature:
                    entry.update(
                        _score_model(samples, records, metric_names, scoring, n_bootstrap, seed, answer_verifier)
                    )
                    texts_by_model[name] = samples.texts
                if frontier:
                    by_temperature[f"{t:g}"] = _frontier_point(samples, records, frontier[0], frontier[2], scoring)
        finally:
            sampler.close()
        if frontier:
            entry["per_prompt"]["frontier"] = by_temperature
        results["models"].append(entry)
    if answer_verifier is not None:
        for model in results["models"][1:]:
            model["split"] = _split(results["models"][0], model)
    if frontier:
        results["frontier"] = _frontier_results(results, frontier, n_bootstrap, seed)
    if "embedder" in resources:
        results.update(semantic_views(texts_by_model, resources["embedder"], conventions, n_bootstrap, seed))
    results["files"] = {k: str(v) for k, v in write_results(results, out_dir).items()}
    return results


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `divalign eval`."""
    parser = subparsers.add_parser(
        "eval",
        help="sample from a model lineage and score output diversity",
        description="Sample K completions per prompt from each model and score their diversity (divalign.diversity).",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="model checkpoint, repeat in lineage order (e.g. --model base=... --model sft=...)",
    )
    parser.add_argument(
        "--prompts",
        required=True,
        help="a .jsonl/.json/.txt/.csv/.parquet file (`prompt` or `messages`, optional `answer`), "
        "a save_to_disk folder, a data folder or a Hub dataset id (the diversity callback's loader)",
    )
    parser.add_argument("--prompts-split", default="test", help="split to read when --prompts is a dataset")
    parser.add_argument("--prompts-column", default=None, help="prompt column (default: prompt, else messages)")
    parser.add_argument(
        "--answer-column", default=None, help="reference-answer column (default: answer, else solution)"
    )
    parser.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts (default: all)")
    parser.add_argument("--samples", type=int, default=16, help="samples per prompt (K >= 2)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0, help="the temperature of the main tables")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="also sample at each T and draw every model's quality-diversity frontier (frontier.png, "
        "and the quality difference vs the first model at matched diversity)",
    )
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument(
        "--top-k",
        type=int,
        default=0,
        help="0 = off; nothing else is applied: the checkpoints' generation_config.json is ignored",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="a sample's noise depends only on the seed, its prompt's index and its own index",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help=f"metric names (space or comma separated; default: {' '.join(DEFAULT_EVAL_METRICS)})",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=DEFAULT_PROFILE,
        help="metric conventions: divalign (default); karouzos2026 (Karouzos et al., arXiv 2604.16027: EAD over "
        "words, NLI over sentence pairs on [0, 2], all-mpnet-base-v2, <think> stripped); tofu2026 (the TOFU paper's "
        "lowercased self-BLEU on 0-100). Named in results.md and results.json",
    )
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="sentence embedder of the semantic metrics and views (default: the profile's; divalign: all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--cluster-threshold",
        type=float,
        default=DEFAULT_CLUSTER_THRESHOLD,
        help="cosine similarity at which two samples are one semantic cluster (semantic_clusters; default "
        f"{DEFAULT_CLUSTER_THRESHOLD}, chosen for all-MiniLM-L6-v2)",
    )
    parser.add_argument("--nli-model", default=DEFAULT_NLI_MODEL, help="used only when `nli` or `semantic_clusters_nli` is among the metrics")
    parser.add_argument(
        "--verifier",
        default=None,
        metavar="MODULE:FUNCTION",
        help="fn(completion, answer) -> bool, e.g. divalign.diversity.answers:final_answer_matches",
    )
    parser.add_argument(
        "--quality",
        default=None,
        metavar="MODULE:FUNCTION",
        help="the frontier's quality: fn(completion, answer) -> float per sample (default: the verifier's accuracy)",
    )
    parser.add_argument(
        "--frontier-metric",
        default=None,
        help="the frontier's diversity metric (default: the first diversity metric of --metrics)",
    )
    parser.add_argument("--backend", choices=("auto", "hf", "vllm"), default="auto")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (speed, not samples)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI")
    parser.add_argument("--out", default="eval_results", help="output directory (must be empty or absent)")
    parser.add_argument(
        "--move-aside",
        action="store_true",
        help="when --out holds an earlier evaluation, rename it to <out>.old-<time> first",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign eval` from parsed arguments."""
    metrics = None if args.metrics is None else [m for arg in args.metrics for m in arg.split(",") if m]
    results = evaluate_lineage(
        [parse_model_spec(s) for s in args.model],
        args.prompts,
        prompts_split=args.prompts_split,
        prompts_column=args.prompts_column,
        answer_column=args.answer_column,
        num_prompts=args.num_prompts,
        num_samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        temperatures=args.temperatures,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        metrics=metrics,
        profile=args.profile,
        embedding_model=args.embedding_model,
        cluster_threshold=args.cluster_threshold,
        nli_model=args.nli_model,
        verifier=args.verifier,
        quality=args.quality,
        frontier_metric=args.frontier_metric,
        backend=args.backend,
        batch_size=args.batch_size,
        device=args.device,
        n_bootstrap=args.bootstrap,
        out_dir=args.out,
        move_aside=args.move_aside,
    )
    for kind, path in results["files"].items():
        print(f"{kind}: {path}")
    return 0
