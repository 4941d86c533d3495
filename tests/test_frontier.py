"""The quality–diversity frontier comparison (`divalign.evaluation.frontier`) against hand-computed values."""

from __future__ import annotations

import itertools
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


def by_hand_at(diversity: list[float], quality: list[float], level: float) -> float:
    """Quality of a frontier at `level`: linear between the points no other point beats on both axes."""
    points = list(zip(diversity, quality, strict=True))
    kept = sorted(p for p in points if not any(o[0] >= p[0] and o[1] >= p[1] and o != p for o in points))
    for (x0, y0), (x1, y1) in itertools.pairwise(kept):
        if x0 <= level <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (level - x0) / (x1 - x0)
    return kept[0][1] if len(kept) == 1 and kept[0][0] == level else math.nan


def test_paired_bootstrap_with_a_reference_whose_quality_varies_across_prompts():
    """Five prompts of different difficulty: the reference's quality at every temperature is its base value minus the
    prompt's difficulty, the model's the same plus 0.05 plus a small prompt-level wobble, so most of the spread over
    prompts is shared. The CIs equal a computation by hand that redraws the same prompts for both models (the seed's
    stream of `integers(0, 5, 5)`), means them per temperature, and reads both frontiers at the fixed levels;
    resampling the reference's prompts independently instead (an unpaired bootstrap) gives CIs several times wider."""
    difficulty = np.array([0.0, 0.3, 0.1, 0.45, 0.2])
    wobble = np.array([0.01, -0.02, 0.0, 0.02, -0.01])
    base_quality, base_diversity = np.array([0.9, 0.75, 0.5]), np.array([0.2, 0.45, 0.7])
    spread = np.array([0.0, 0.05, -0.03, 0.02, -0.04])  # each prompt's own diversity offset
    ref_q = base_quality[:, None] - difficulty[None, :]
    mod_q = ref_q + 0.05 + wobble[None, :]
    ref_d = base_diversity[:, None] + spread[None, :]
    mod_d = base_diversity[:, None] + 0.04 + spread[None, :]
    reference = FrontierCurve([0.7, 1.0, 1.3], ref_q, ref_d)
    model = FrontierCurve([0.7, 1.0, 1.3], mod_q, mod_d)
    n, seed = 400, 5
    result = matched_difference(reference, model, count=4, n_bootstrap=n, seed=seed)

    low, high = max(ref_d.mean(1).min(), mod_d.mean(1).min()), min(ref_d.mean(1).max(), mod_d.mean(1).max())
    levels = np.linspace(low, high, 4)
    assert result.levels == pytest.approx(levels)

    def difference(ref_prompts, mod_prompts):
        rd, rq = ref_d[:, ref_prompts].mean(1), ref_q[:, ref_prompts].mean(1)
        md, mq = mod_d[:, mod_prompts].mean(1), mod_q[:, mod_prompts].mean(1)
        return [by_hand_at(list(md), list(mq), v) - by_hand_at(list(rd), list(rq), v) for v in levels]

    rng = np.random.default_rng(seed)
    paired = np.array([difference(p, p) for p in (rng.integers(0, 5, size=5) for _ in range(n))])
    assert result.difference == pytest.approx(difference(np.arange(5), np.arange(5)))
    assert result.ci_low == pytest.approx([np.percentile(c[~np.isnan(c)], 2.5) for c in paired.T])
    assert result.ci_high == pytest.approx([np.percentile(c[~np.isnan(c)], 97.5) for c in paired.T])
    means = np.nanmean(paired, axis=1)
    assert result.mean_ci == pytest.approx(tuple(np.percentile(means[~np.isnan(means)], [2.5, 97.5])))

    rng = np.random.default_rng(seed)
    unpaired = np.array([difference(rng.integers(0, 5, size=5), rng.integers(0, 5, size=5)) for _ in range(n)])
    paired_width = np.array(result.ci_high) - np.array(result.ci_low)
    unpaired_width = np.nanpercentile(unpaired, 97.5, axis=0) - np.nanpercentile(unpaired, 2.5, axis=0)
    assert (unpaired_width > 3 * paired_width).all(), unpaired_width / paired_width


def test_scipy_bootstrap_cannot_leave_out_resamples_that_miss_a_level_so_the_frontier_keeps_its_own():
    """Why the matched-diversity CIs stay a percentile bootstrap of their own instead of `scipy.stats.bootstrap`: a
    resample of prompts whose frontier does not reach a matched level has no value there. The frontier's interval
    leaves such resamples out of that level; scipy's interval of the same statistic over the same resamples of
    prompts turns NaN at the edge levels, where some resamples fall short."""
    from scipy import stats

    spread = np.array([0.0, 0.15, -0.1, 0.08, -0.12])  # each prompt's own diversity offset
    ref_d = np.array([0.2, 0.45, 0.7])[:, None] + spread[None, :]
    mod_d = ref_d + 0.04
    ref_q = np.array([0.9, 0.75, 0.5])[:, None] + np.zeros(5)[None, :]
    reference, model = FrontierCurve([0.7, 1.0, 1.3], ref_q, ref_d), FrontierCurve([0.7, 1.0, 1.3], ref_q + 0.05, mod_d)
    result = matched_difference(reference, model, count=4, n_bootstrap=300, seed=2)
    levels = np.asarray(result.levels)

    def at_levels(prompts: np.ndarray) -> np.ndarray:
        (rd, rq), (md, mq) = reference.points(prompts), model.points(prompts)
        return quality_at(md, mq, levels) - quality_at(rd, rq, levels)

    scipy_ci = stats.bootstrap(
        (np.arange(5),), at_levels, vectorized=False, n_resamples=300, method="percentile", rng=2
    ).confidence_interval
    assert np.isnan(scipy_ci.low[[0, -1]]).all() or np.isnan(scipy_ci.high[[0, -1]]).all()
    assert all(math.isfinite(v) for v in (*result.ci_low, *result.ci_high))
