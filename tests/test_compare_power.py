"""The power of a compare report: the half-width its pooled CI resolves and what a target difference would take,
on synthetic per-prompt differences with a known spread, and read from a report's calibration results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divalign.compare.power import Z95, paired_differences, power, power_lines, report_power


def synthetic(prompts: int, seeds: int, between: float, within: float, mean: float = 0.0, seed: int = 0) -> np.ndarray:
    """d[p, s] = mean + b[p] + e[p, s], b ~ N(0, between²), e ~ N(0, within²)."""
    rng = np.random.default_rng(seed)
    return mean + rng.normal(0, between, (prompts, 1)) + rng.normal(0, within, (prompts, seeds))


def test_the_half_width_and_its_parts_come_back_from_a_known_spread():
    p = power(synthetic(20_000, 2, between=0.06, within=0.08))
    pooled_sd = math.sqrt(0.06**2 + 0.08**2 / 2)
    assert p.prompts == 20_000 and p.seeds == 2
    assert p.sd == pytest.approx(pooled_sd, rel=0.02)
    assert p.within == pytest.approx(0.08**2, rel=0.03) and p.between == pytest.approx(0.06**2, rel=0.05)
    assert p.half_width == pytest.approx(Z95 * pooled_sd / math.sqrt(20_000), rel=0.02)
    # more seeds divide the within-prompt part only; more prompts divide both
    assert p.projected_half_width(100, seeds=8) == pytest.approx(
        Z95 * math.sqrt((0.06**2 + 0.08**2 / 8) / 100), rel=0.05
    )
    assert p.prompts_for(0.03) == pytest.approx(Z95**2 * pooled_sd**2 / 0.03**2, rel=0.05)


def test_the_half_width_matches_the_spread_of_the_pooled_mean_over_repeated_experiments():
    """The quantity reported is what it claims: across many simulated comparisons of 30 prompts × 2 seeds, 95 % of
    pooled means lie within about one half-width of the true difference."""
    widths, misses = [], 0
    for seed in range(400):
        d = synthetic(30, 2, between=0.05, within=0.07, mean=0.03, seed=seed)
        p = power(d)
        widths.append(p.half_width)
        misses += abs(np.nanmean(d) - 0.03) > p.half_width
    assert np.median(widths) == pytest.approx(Z95 * math.sqrt((0.05**2 + 0.07**2 / 2) / 30), rel=0.1)
    assert 0.02 < misses / 400 < 0.10  # about 5 %, a little more with the SD estimated from 30 prompts


def test_one_seed_has_no_within_part_and_nan_prompts_are_left_out():
    d = np.array([[0.1], [0.3], [math.nan], [0.2]])
    p = power(d)
    assert p.prompts == 3 and p.seeds == 1 and math.isnan(p.within)
    assert p.sd == pytest.approx(0.1) and p.between == pytest.approx(0.01)
    assert p.projected_half_width(3, seeds=4) == pytest.approx(p.half_width)  # no seed part to shrink
    with pytest.raises(ValueError, match="at least 2 prompts, got 1"):
        power(np.array([[0.1, 0.2], [math.nan, math.nan]]))


def _results() -> dict:
    """A compare report's calibration results: B matched at the reference's diversity at both seeds, at its quality
    at seed 0 only; C matched nowhere."""

    def seed(b_quality, ref_quality, quality_match):
        at_quality = {"temperature": 0.8, "diversity_per_prompt": [3.0, 4.0, 5.0]} if quality_match else {}
        return {
            "reference_evaluation": {"quality": ref_quality, "diversity": [2.0, 4.0, 4.0]},
            "matched": {
                "B": {
                    "at_diversity": {"temperature": 0.9, "quality_per_prompt": b_quality},
                    "at_quality": at_quality or {"temperature": None},
                },
                "C": {"at_diversity": {"temperature": None}, "at_quality": {"temperature": None}},
            },
        }

    return {
        "pooled": {"B": {}, "C": {}},
        "seeds": {
            "0": seed([0.9, 0.5, None], [0.8, 0.6, 0.7], True),
            "1": seed([1.0, 0.7, 0.6], [0.9, 0.5, 0.7], False),
        },
    }


def test_a_reports_paired_differences_and_power_are_read_per_model_and_axis():
    results = _results()
    d = paired_differences(results, "B", "diversity")
    assert d.shape == (3, 2)
    np.testing.assert_allclose(d[:2], [[0.1, 0.1], [-0.1, 0.2]])
    assert math.isnan(d[2, 0]) and d[2, 1] == pytest.approx(-0.1)
    np.testing.assert_allclose(paired_differences(results, "B", "quality"), [[1.0], [0.0], [1.0]])
    assert paired_differences(results, "C", "diversity") is None
    found = report_power(results, target=0.03)
    b = found["B"]["at_diversity"]
    means = [0.1, 0.05, -0.1]
    assert b["difference_of"] == "quality" and b["prompts"] == 3 and b["seeds"] == 2
    assert b["sd"] == pytest.approx(np.std(means, ddof=1))
    assert b["half_width"] == pytest.approx(Z95 * np.std(means, ddof=1) / math.sqrt(3))
    assert b["prompts_for_target_twice_the_seeds"] <= b["prompts_for_target"]
    assert found["C"] == {"at_diversity": None, "at_quality": None}
    lines = power_lines(found, "ref", ["diversity"])
    assert len(lines) == 1 and lines[0].startswith("- B at ref's diversity: the pooled CI of the quality difference")
    assert f"±{b['half_width']:.3f}" in lines[0] and f"about {b['prompts_for_target']} prompts" in lines[0]
    assert f"({b['prompts_for_target_twice_the_seeds']} with twice the seeds)" in lines[0]
    one_seed = {"B": {"at_diversity": {**b, "seeds": 1, "within_over_seeds": None}}}
    assert "twice the seeds" not in power_lines(one_seed, "ref", ["diversity"])[0]
