"""`divalign eval --temperatures`: the sweep's settings checked before sampling, each model's points, the comparison.

The frontier's mathematics (efficient points, matched-diversity differences, bootstrap) lives in `frontier.py`, its
quality in `quality.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..diversity import REGISTRY
from ..diversity.aggregate import summarize_with_ci
from ..diversity.registry import score_groups
from ..prompts import PromptRecord
from .frontier import FrontierCurve, matched_difference
from .quality import accuracy, prompt_quality
from .sampling import Samples

if TYPE_CHECKING:
    from ..rewards.quality import Quality

AnswerVerifier = Callable[[str, "str | None"], bool]
QualityScorer = Callable[[str, "str | None"], float]


@dataclass(frozen=True)
class FrontierSetup:
    """What a frontier sets against what: the diversity metric and the per-sample quality."""

    diversity: str
    quality: Quality


def temperature_sweep(temperature: float, temperatures: Sequence[float] | None) -> list[float]:
    """The temperatures to sample: the main `temperature` plus the sweep's, ascending, each once."""
    return sorted({float(temperature), *(float(t) for t in temperatures or [])})


def frontier_setup(
    temperatures: Sequence[float] | None,
    metrics: list[str],
    frontier_metric: str | None,
    verifier: AnswerVerifier | None,
    quality: Quality | None,
) -> FrontierSetup | None:
    """The frontier's diversity metric and quality (`quality`, loaded by `quality.load_quality`, else the verifier's
    accuracy), checked before any sampling; ``None`` without `temperatures`."""
    if not temperatures:
        if frontier_metric:
            raise ValueError("--frontier-metric belongs to a frontier: pass --temperatures T1 T2 ...")
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
        return FrontierSetup(diversity, quality)
    if verifier is None:
        raise ValueError(
            "a frontier needs a quality: --verifier MODULE:FUNCTION (accuracy), or --quality: a reward name, "
            "reward_model:PATH or MODULE:FUNCTION"
        )
    return FrontierSetup(diversity, accuracy(verifier))


def frontier_point(
    samples: Samples,
    records: list[PromptRecord],
    setup: FrontierSetup,
    resources: dict[str, Any],
    label: str,
    quality: list[float] | None = None,
) -> dict[str, list[float]]:
    """Per-prompt quality (mean over the K samples' defined scores; `quality` when already scored) and diversity of
    one model at one temperature."""
    scores = score_groups(
        samples.texts, samples.token_ids, metrics=[setup.diversity], vocab_size=samples.vocab_size, **resources
    )
    if quality is None:
        quality = prompt_quality(setup.quality, records, samples, label)
    return {"quality": quality, "diversity": scores.per_prompt[setup.diversity].tolist()}


def frontier_results(
    results: dict[str, Any], setup: FrontierSetup, reference: str, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Each model's frontier points (mean [CI] per temperature) and the matched-diversity differences vs
    `reference`."""
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
                "quality": summarize_with_ci(by_t[t]["quality"], n_bootstrap, seed),
                "diversity": summarize_with_ci(by_t[t]["diversity"], n_bootstrap, seed),
            }
            for t in temperatures
        ]
    comparisons = {
        name: dataclasses.asdict(matched_difference(curves[reference], curve, n_bootstrap=n_bootstrap, seed=seed))
        for name, curve in curves.items()
        if name != reference
    }
    return {
        "diversity_metric": setup.diversity,
        "quality": setup.quality.name,
        "reference": reference,
        "comparisons": comparisons,
    }
