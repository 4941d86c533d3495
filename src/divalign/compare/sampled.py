"""A trained model as the calibrated comparison reads it: sampled and scored as `divalign eval` does, cached on disk.

Sampling goes through `evaluation.sampling.open_sampler` (the same noise rule: prompt i's noise comes from
`prompt_seed(seed, i)`), quality through `evaluation.quality` (the `--quality` grammar, or `--verifier`'s accuracy),
diversity through `diversity.score_groups`. Each (prompt set, temperature) is written to
`cache_dir/<prompt set>@T<t>.json` (samples and per-prompt scores); `cache_dir` carries a hash of everything that
shapes the samples and scores (the checkpoint's files, prompts, sampling and scoring settings), so a changed input
samples afresh and never reads a stale file. The model is loaded on the first cache miss and once only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..diversity import REGISTRY
from ..diversity.clusters import DEFAULT_CLUSTER_THRESHOLD
from ..diversity.embedding import CachedEmbedder
from ..diversity.nli import DEFAULT_NLI_MODEL, NLIScorer
from ..diversity.profile import DEFAULT_PROFILE, MetricProfile, get_profile, load_profile_embedder
from ..diversity.registry import check_requirements, metric_needs, score_groups, validate_metrics
from ..evaluation.quality import accuracy, load_quality, prompt_quality
from ..evaluation.sampling import EvalSampling, Samples, check_model_path, check_sampling, open_sampler
from ..generation import SamplingSettings
from ..prompts import PromptRecord, load_prompts
from ..strict_json import nan_array, strict_json
from ..user_code import load_verifier
from .spec import EvaluationSpec
from .statistics import Axes

if TYPE_CHECKING:
    from ..rewards.quality import Quality

_CACHE_VERSION = 1


@dataclass
class Scoring:
    """What every model is scored with: the prompt sets, the sampling settings, the diversity metric and the quality
    (loaded once for all models)."""

    evaluation: EvaluationSpec
    prompts: dict[str, list[PromptRecord]]
    settings: SamplingSettings
    metric: str
    profile: MetricProfile
    quality: Quality
    verifier: Any
    resources: dict[str, Any]

    @property
    def direction(self) -> int:
        return REGISTRY[self.metric].direction

    def fingerprint(self) -> dict[str, Any]:
        e = self.evaluation
        return {
            "version": _CACHE_VERSION,
            "prompts": {k: [[r.prompt, r.answer] for r in v] for k, v in self.prompts.items()},
            "samples": e.samples,
            "max_new_tokens": e.max_new_tokens,
            "seed": e.seed,
            "quality": e.quality,
            "verifier": e.verifier,
            "metric": self.metric,
            "profile": self.profile.name,
        }


def _check_evaluation(evaluation: EvaluationSpec) -> None:
    low, high = evaluation.temperature_range
    t_ref = evaluation.reference_temperature
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"evaluation.temperature_range must be (low, high) with 0 < low < high, got {(low, high)}")
    if not low <= t_ref <= high:
        raise ValueError(f"evaluation.reference_temperature {t_ref} lies outside temperature_range {(low, high)}")
    if evaluation.tolerance < 0 or evaluation.max_bisection_steps < 0:
        raise ValueError(
            f"evaluation.tolerance and evaluation.max_bisection_steps must be >= 0, got {evaluation.tolerance} "
            f"and {evaluation.max_bisection_steps}"
        )
    if evaluation.n_bootstrap < 1:
        raise ValueError(f"evaluation.n_bootstrap must be >= 1, got {evaluation.n_bootstrap}")
    if evaluation.quality is None and evaluation.verifier is None:
        raise ValueError("evaluation needs a quality: `quality:` (as divalign eval --quality) or `verifier:`")


def load_scoring(evaluation: EvaluationSpec, device: str | None = None) -> Scoring:
    """Check the evaluation settings, read both prompt sets and load the quality and the metric's resources, before
    any model is sampled (errors name the `evaluation.` key)."""
    _check_evaluation(evaluation)
    settings = SamplingSettings(
        num_samples=evaluation.samples,
        max_new_tokens=evaluation.max_new_tokens,
        temperature=evaluation.reference_temperature,
        seed=evaluation.seed,
        batch_size=evaluation.batch_size,
    )
    check_sampling(EvalSampling(settings), [evaluation.reference_temperature, *evaluation.temperature_range])
    columns = {"column": evaluation.prompts_column, "answer_column": evaluation.answer_column}
    prompts = {
        "calibration": load_prompts(evaluation.calibration_prompts, **columns),
        "evaluation": load_prompts(evaluation.prompts, **columns),
    }
    profile = get_profile(DEFAULT_PROFILE)
    (metric,) = validate_metrics([evaluation.diversity_metric])
    if REGISTRY[metric].direction == 0:
        raise ValueError(f"evaluation.diversity_metric {metric!r} is not a diversity metric")
    verifier = load_verifier(evaluation.verifier) if evaluation.verifier else None
    needs = metric_needs(metric, profile)
    check_requirements(
        [metric], {"token_ids", "vocab_size", "embedder", "nli_scorer"} | ({"verifier"} if verifier else set()), profile
    )
    records = prompts["calibration"] + prompts["evaluation"]
    quality = load_quality(evaluation.quality, records) if evaluation.quality else accuracy(verifier)
    resources: dict[str, Any] = {}
    if "embedder" in needs:
        resources["embedder"] = CachedEmbedder(load_profile_embedder(profile, None, device=device))
    if "nli_scorer" in needs:
        resources["nli_scorer"] = NLIScorer(DEFAULT_NLI_MODEL, device=device)
        resources["nli_scorer"].load()
    return Scoring(evaluation, prompts, settings, metric, profile, quality, verifier, resources)


def _checkpoint_files(path: Path) -> list[list[Any]]:
    """Name, size and modification time of the checkpoint's files: a retrained or resumed cell changes them."""
    if not path.is_dir():
        return [[str(path)]]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir()) if f.is_file()]


class SampledModel:
    """One trained cell: its `axes(prompt_set, temperature)`, read from the cache or sampled and scored."""

    def __init__(self, name: str, path: Path, scoring: Scoring, cache_root: Path, device: str | None = None) -> None:
        check_model_path(name, str(path))
        self.name, self.path, self.scoring, self.device = name, Path(path), scoring, device
        key = json.dumps({"model": _checkpoint_files(self.path), **scoring.fingerprint()}, sort_keys=True)
        self.cache_dir = cache_root / hashlib.sha256(key.encode()).hexdigest()[:16]
        self._memo: dict[tuple[str, float], Axes] = {}
        self._sampler: Any = None
        self.sampled: list[tuple[str, float]] = []  # what this instance had to sample (the rest came from disk)

    def cache_file(self, prompt_set: str, temperature: float) -> Path:
        """Where the samples and scores of (prompt set, temperature) are cached (the file `axes` reads or writes)."""
        return self.cache_dir / f"{prompt_set}@T{temperature:.10g}.json"

    def axes(self, prompt_set: str, temperature: float) -> Axes:
        key = (prompt_set, float(temperature))
        if key not in self._memo:
            path = self.cache_file(prompt_set, temperature)
            self._memo[key] = self._read(path) if path.is_file() else self._sample(prompt_set, temperature, path)
        return self._memo[key]

    def _read(self, path: Path) -> Axes:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Axes(nan_array(data["diversity"]), nan_array(data["quality"]))

    def _sample(self, prompt_set: str, temperature: float, path: Path) -> Axes:
        scoring = self.scoring
        records = scoring.prompts[prompt_set]
        if self._sampler is None:
            self._sampler = open_sampler(self.name, str(self.path), EvalSampling(scoring.settings, device=self.device))
        samples = self._sampler.sample(records, dataclasses.replace(scoring.settings, temperature=temperature))
        axes = Axes(self._diversity(samples, records), np.asarray(self._quality(samples, records, temperature)))
        self.sampled.append((prompt_set, float(temperature)))
        data = {
            "model": str(self.path),
            "prompt_set": prompt_set,
            "temperature": temperature,
            "diversity": strict_json(np.asarray(axes.diversity, dtype=np.float64)),
            "quality": strict_json(np.asarray(axes.quality, dtype=np.float64)),
            "texts": samples.texts,
            "token_ids": samples.token_ids,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(data, allow_nan=False, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, path)  # an interrupted write never leaves a readable, truncated cache file
        return axes

    def _diversity(self, samples: Samples, records: list[PromptRecord]) -> np.ndarray:
        scoring = self.scoring
        verifier = scoring.verifier
        scores = score_groups(
            samples.texts,
            samples.token_ids,
            metrics=[scoring.metric],
            vocab_size=samples.vocab_size,
            verifier=(lambda text, i: bool(verifier(text, records[i].answer))) if verifier else None,
            profile=scoring.profile,
            cluster_threshold=DEFAULT_CLUSTER_THRESHOLD,
            **scoring.resources,
        )
        return scores.per_prompt[scoring.metric]

    def _quality(self, samples: Samples, records: list[PromptRecord], temperature: float) -> list[float]:
        return prompt_quality(self.scoring.quality, records, samples, f"{self.name} (T={temperature:g})")

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
