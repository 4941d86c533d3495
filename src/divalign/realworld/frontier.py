"""The verifier's quality–diversity frontier: validity against distinct valid answers per prompt, over temperature.

A temperature sweep trades validity for diversity, so TOFU or GEM "being more diverse" than CE means something only
at matched diversity: each model's (distinct valid answers, validity) points across temperatures, compared with CE's
of the same seed at shared diversity levels (:func:`divalign.evaluation.frontier.matched_difference`: linear
between Pareto-efficient points, never extrapolated, 95 % CIs from a bootstrap over prompts that redraws both
frontiers). The seeds' mean curve of a loss averages each prompt's values over its seeds before the comparison.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.frontier import FrontierCurve, matched_difference, plot_frontiers

QUALITY = "validity"
DIVERSITY = "distinct_valid"
QUALITY_LABEL = "validity"
DIVERSITY_LABEL = "distinct valid answers per prompt"


def curve(per_temperature: Mapping[str, Mapping[str, Sequence[float]]]) -> FrontierCurve:
    """One model's frontier from its per-prompt verifier metrics at each temperature (keys are temperatures)."""
    temperatures = sorted(per_temperature, key=float)
    return FrontierCurve(
        temperatures=[float(t) for t in temperatures],
        quality=np.array([per_temperature[t][QUALITY] for t in temperatures], dtype=np.float64),
        diversity=np.array([per_temperature[t][DIVERSITY] for t in temperatures], dtype=np.float64),
    )


def mean_curve(curves: Sequence[FrontierCurve]) -> FrontierCurve:
    """The seeds' mean: each prompt's validity and diversity averaged over the curves (same temperatures)."""
    if len({tuple(c.temperatures) for c in curves}) != 1:
        raise ValueError("curves to average must share their temperatures")
    return FrontierCurve(
        temperatures=list(curves[0].temperatures),
        quality=np.mean([c.quality for c in curves], axis=0),
        diversity=np.mean([c.diversity for c in curves], axis=0),
    )


def compare_with_reference(
    curves: Mapping[str, FrontierCurve], pairs: Sequence[tuple[str, str]], n_bootstrap: int, seed: int
) -> dict[str, dict[str, Any]]:
    """`{model: matched validity difference vs its reference}` for each (reference, model) pair."""
    return {
        model: {
            "reference": reference,
            **dataclasses.asdict(
                matched_difference(curves[reference], curves[model], n_bootstrap=n_bootstrap, seed=seed)
            ),
        }
        for reference, model in pairs
    }


def points(curve_: FrontierCurve) -> list[dict[str, float]]:
    """Mean (diversity, validity) per temperature, for tables."""
    diversity, quality = curve_.points()
    return [
        {"temperature": t, DIVERSITY: float(d), QUALITY: float(q)}
        for t, d, q in zip(curve_.temperatures, diversity, quality, strict=True)
    ]


def plot(curves: Mapping[str, FrontierCurve], path: str | Path, title: str) -> Path:
    """Every curve's points (labelled by temperature) and its efficient frontier."""
    drawn = {name: (c.temperatures, *c.points()) for name, c in curves.items()}
    return plot_frontiers(drawn, path, DIVERSITY_LABEL, QUALITY_LABEL, title=title)
