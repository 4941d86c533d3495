"""The quality–diversity frontier comparison (`divalign.evaluation.frontier`) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divalign.evaluation.frontier import (
    FrontierCurve,
    difference_table,
    efficient,
    matched_difference,
    quality_at,
    shared_levels,
)


def test_quality_at_interpolates_between_points_in_diversity_order_and_never_extrapolates():
    # points given in temperature order; diversity 0.2 -> 0.9, 0.5 -> 0.7, 0.8 -> 0.3
    diversity, quality = [0.5, 0.2, 0.8], [0.7, 0.9, 0.3]
    got = quality_at(diversity, quality, [0.2, 0.35, 0.65, 0.8, 0.1, 0.9])
    assert got[:4] == pytest.approx([0.9, 0.8, 0.5, 0.3])  # 0.9 + (0.7 - 0.9) * 0.5 ; 0.7 + (0.3 - 0.7) * 0.5
    assert math.isnan(got[4]) and math.isnan(got[5])
    assert math.isnan(quality_at([math.nan], [1.0], [0.5])[0])


def test_frontier_keeps_only_the_efficient_points():
    """Past its most diverse temperature a model loses quality and diversity together: (0.6, 0.2) is beaten by
    (0.8, 0.3) on both, so the frontier runs from (0.5, 0.7) straight to (0.8, 0.3)."""
    diversity, quality = [0.2, 0.5, 0.8, 0.6], [0.9, 0.7, 0.3, 0.2]
    assert [p.tolist() for p in efficient(diversity, quality)] == [[0.2, 0.5, 0.8], [0.9, 0.7, 0.3]]
    assert quality_at(diversity, quality, [0.65])[0] == pytest.approx(0.7 + (0.3 - 0.7) * 0.15 / 0.3)
    # equal diversity: only the better one counts
    assert [p.tolist() for p in efficient([0.3, 0.3, 0.1], [0.5, 0.8, 0.9])] == [[0.1, 0.3], [0.9, 0.8]]


def test_shared_levels_span_the_overlap():
    assert shared_levels([0.1, 0.5], [0.3, 0.9], count=3) == pytest.approx([0.3, 0.4, 0.5])
    assert shared_levels([0.1, 0.2], [0.3, 0.4]).size == 0
    assert shared_levels([0.1, 0.3], [0.3, 0.4]).tolist() == [0.3]


def curve(diversity: list[list[float]], quality: list[list[float]]) -> FrontierCurve:
    return FrontierCurve(temperatures=[0.7, 1.0, 1.3], quality=np.array(quality), diversity=np.array(diversity))


def test_matched_difference_of_a_shifted_frontier():
    """The model's frontier is the reference's moved right by 0.1 in diversity. Reference: d = 0.2, 0.4, 0.6 with
    q = 1 - d; model: d = 0.3, 0.5, 0.7 with the same qualities, i.e. q = 1.1 - d. Inside the shared range
    [0.3, 0.6] the model is 0.1 better at every diversity."""
    same_prompts = 4
    qualities = [[0.8] * same_prompts, [0.6] * same_prompts, [0.4] * same_prompts]
    reference = curve([[0.2] * same_prompts, [0.4] * same_prompts, [0.6] * same_prompts], qualities)
    model = curve([[0.3] * same_prompts, [0.5] * same_prompts, [0.7] * same_prompts], qualities)
    result = matched_difference(reference, model, count=4, n_bootstrap=200)
    assert result.levels == pytest.approx([0.3, 0.4, 0.5, 0.6])
    assert result.difference == pytest.approx([0.1] * 4)
    assert result.mean == pytest.approx(0.1)
    # identical prompts: every resample gives the same frontiers, so the CI collapses onto the estimate
    assert result.ci_low == pytest.approx([0.1] * 4) and result.ci_high == pytest.approx([0.1] * 4)
    assert result.mean_ci == pytest.approx((0.1, 0.1))


def test_matched_difference_bootstrap_resamples_prompts_jointly():
    """Two prompts: on prompt 0 the model is 0.2 better, on prompt 1 equal. A joint resample picks each prompt for
    both models, so the difference at any matched level lies between 0 and 0.2, and both ends occur."""
    reference = curve([[0.2, 0.2], [0.5, 0.5], [0.8, 0.8]], [[0.9, 0.9], [0.6, 0.6], [0.3, 0.3]])
    model = curve([[0.2, 0.2], [0.5, 0.5], [0.8, 0.8]], [[1.1, 0.9], [0.8, 0.6], [0.5, 0.3]])
    result = matched_difference(reference, model, count=3, n_bootstrap=500, seed=1)
    assert result.difference == pytest.approx([0.1, 0.1, 0.1])
    assert result.ci_low == pytest.approx([0.0] * 3, abs=1e-12) and result.ci_high == pytest.approx([0.2] * 3)


def test_disjoint_frontiers_are_reported_not_extrapolated():
    reference = curve([[0.1], [0.2], [0.3]], [[0.9], [0.8], [0.7]])
    model = curve([[0.5], [0.6], [0.7]], [[0.9], [0.8], [0.7]])
    result = matched_difference(reference, model, n_bootstrap=10)
    assert result.levels == [] and math.isnan(result.mean)
    lines = difference_table("ce", {"tofu": result}, "ead", "accuracy")
    assert "| tofu | no diversity range shared with ce | n/a |" in lines
