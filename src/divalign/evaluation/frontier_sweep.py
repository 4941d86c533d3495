"""`divalign eval --temperatures`: the sweep's settings checked before sampling, each model's points, the comparison.

The frontier's mathematics (efficient points, matched-diversity differences, bootstrap) lives in `frontier.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..diversity import REGISTRY
from ..diversity.aggregate import bootstrap_ci, summarize
from ..diversity.registry import score_groups
from .frontier import FrontierCurve, matched_difference
from .prompts import PromptRecord, load_callable
from .sampling import Samples

AnswerVerifier = Callable[[str, "str | None"], bool]
QualityScorer = Callable[[str, "str | None"], float]


def temperature_sweep(temperature: float, temperatures: Sequence[float] | None) -> list[float]:
    """The temperatures to sample: the main `temperature` plus the sweep's, ascending, each once."""
    return sorted({float(temperature), *(float(t) for t in temperatures or [])})


def frontier_setup(
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


def frontier_point(
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


def frontier_results(
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
