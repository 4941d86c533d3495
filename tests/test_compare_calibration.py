"""`divalign compare`'s calibrated comparison (issue 28): the bisection over temperature, the scipy bootstrap CIs,
per-seed and pooled differences, dominance and single-point frontiers — each against a closed form — then the
comparison itself on synthetic models whose answer distributions are known exactly, and once end to end on two
tiny checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from divalign.compare.calibration import calibration_markdown, compare_models
from divalign.compare.spec import EvaluationSpec
from divalign.compare.statistics import (
    Axes,
    Point,
    bisect_temperature,
    difference_ci,
    dominance,
    frontier,
    highest_temperature_holding,
    mean_ci,
    seed_differences,
    single_point_label,
)
from divalign.diversity import bootstrap as bootstrap_module
from divalign.strict_json import strict_json

Z = stats.norm.ppf(0.975)

# --- bisection -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", [math.log, lambda t: 1 / t], ids=["increasing", "decreasing"])
def test_bisection_reaches_a_target_within_its_tolerance(measure):
    target = measure(1.37)
    result = bisect_temperature(measure, target, 0.3, 2.5, tolerance=1e-3, max_steps=30)
    assert result.reached and result.outcome == "reached"
    assert abs(measure(result.temperature) - target) <= 1e-3 * abs(target)
    assert result.value == measure(result.temperature)
    # bisection halves the bracket: it cannot have needed every step for a tolerance of 1e-3
    assert 2 < len(result.evaluations) < 32


@pytest.mark.parametrize(("target", "side"), [(5.0, "above"), (-5.0, "below")])
def test_a_target_outside_the_range_is_reported_not_reached_and_never_extrapolated(target, side):
    result = bisect_temperature(math.log, target, 0.3, 2.5, tolerance=0.02, max_steps=8)
    assert result.outcome == "out of range" and not result.reached
    assert result.temperature is None and result.value is None
    assert result.bracket == (0.3, 2.5)
    assert side in result.reason
    # only the two ends were measured, and the closest of them is named
    assert [t for t, _ in result.evaluations] == [0.3, 2.5]
    assert result.closest == (2.5 if side == "above" else 0.3)


def test_bisection_out_of_steps_keeps_a_bracket_around_the_target():
    result = bisect_temperature(math.log, math.log(1.37), 0.3, 2.5, tolerance=1e-9, max_steps=3)
    assert result.outcome == "steps exhausted" and result.temperature is None
    low, high = result.bracket
    assert low < 1.37 < high and high - low == pytest.approx(2.2 / 2**3)
    assert len(result.evaluations) == 2 + 3


def test_bisection_from_a_first_guess():
    """A model like the reference matches at the reference's temperature: one measurement. Otherwise the guess
    splits the range as the first midpoint would."""
    square = lambda t: t * t  # noqa: E731
    hit = bisect_temperature(square, 1.02**2, 0.3, 2.5, tolerance=0.05, max_steps=8, start=1.0)
    assert hit.reached and hit.temperature == 1.0 and hit.evaluations == [(1.0, 1.0)]
    miss = bisect_temperature(square, 1.5**2, 0.3, 2.5, tolerance=1e-9, max_steps=0, start=1.0)
    assert miss.outcome == "steps exhausted" and miss.bracket == (1.0, 2.5)
    assert [t for t, _ in miss.evaluations] == [1.0, 0.3, 2.5]
    with pytest.raises(ValueError, match="start 3 must lie inside"):
        bisect_temperature(square, 1.0, 0.3, 2.5, start=3)


def plateau(t: float, best: float = 0.8, edge: float = 1.2, slope: float = 0.5) -> float:
    """A quality flat at its best up to T = edge, then falling linearly."""
    return best - slope * max(0.0, t - edge)


def test_a_quality_plateau_is_read_at_its_hot_end_where_a_bisection_stops_anywhere_on_it():
    """Target: the plateau's value less 0.5 %. Within a 2 % tolerance the whole plateau matches, so a bisection
    stops at its first guess, T = 1; the quality search goes on to the plateau's hot end, T = 1.2, and never past the
    closed-form last holding temperature 1.2 + (0.8 − target·0.98) / 0.5."""
    target = 0.8 * 0.995
    last_holding = 1.2 + (0.8 - target * 0.98) / 0.5
    assert bisect_temperature(plateau, target, 0.3, 2.5, 0.02, 8, start=1.0).temperature == 1.0
    found = highest_temperature_holding(plateau, target, 0.3, 2.5, 0.02, 8, start=1.0)
    assert found.reached and last_holding - 0.05 <= found.temperature <= last_holding
    assert [t for t, _ in found.evaluations][:2] == [2.5, 1.0]  # the upper end first, then the first guess
    assert len(found.evaluations) == 2 + 5  # bracket [1, 2.5] halved to <= 0.05 in 5 steps
    # a finer resolution gets closer to the closed form, as far as the steps allow
    fine = highest_temperature_holding(plateau, target, 0.3, 2.5, 0.02, 40, start=1.0, resolution=1e-6)
    assert fine.temperature == pytest.approx(last_holding, abs=1e-6)


def test_the_quality_search_reports_the_range_end_and_a_target_never_held():
    kept = highest_temperature_holding(lambda t: 0.9, 0.8, 0.3, 2.5, 0.02, 8, start=1.0)
    assert kept.outcome == "range end" and kept.temperature == 2.5 and kept.evaluations == [(2.5, 0.9)]
    never = highest_temperature_holding(plateau, 0.95, 0.3, 2.5, 0.02, 8, start=1.0)
    assert never.outcome == "out of range" and never.temperature is None
    assert "not held" in never.reason and [t for t, _ in never.evaluations] == [2.5, 1.0, 0.3]
    # the first guess misses, the cold end holds: the boundary lies between them
    rising = highest_temperature_holding(lambda t: 1.0 - t / 2, 0.75, 0.3, 2.5, 0.01, 20, start=1.0)
    assert rising.reached and 0.5 - 0.05 <= rising.temperature <= 0.5 + 0.0075 * 2
    # a cliff: quality 0.9 up to T = 1.3, then 0: the target 0.75 is held with room to spare up to the cliff
    cliff = highest_temperature_holding(lambda t: 0.9 if t <= 1.3 else 0.0, 0.75, 0.3, 2.5, 0.02, 8, start=1.0)
    assert cliff.outcome == "steps exhausted" and cliff.temperature is None
    low, high = cliff.bracket
    assert low <= 1.3 < high and high - low <= 0.05 and cliff.closest == low


def test_bisection_refuses_a_range_that_is_not_a_temperature_range():
    with pytest.raises(ValueError, match="0 < low < high"):
        bisect_temperature(math.log, 0.0, 1.0, 0.5)


# --- confidence intervals ------------------------------------------------------------------------------------------


def test_constant_differences_give_the_zero_width_interval_where_scipy_bca_gives_nan():
    """What BCa cannot express: with no spread its acceleration is 0/0 and scipy returns NaN (with a warning).
    (Dyadic values, so that every difference is exactly 0.25.)"""
    reference = np.array([0.5, 1.0, 0.25, 2.0, 0.75])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = stats.bootstrap((reference + 0.25 - reference,), np.mean, method="BCa", rng=0)
    assert math.isnan(raw.confidence_interval.low)
    interval = difference_ci(reference + 0.25, reference, paired=True)
    assert interval.estimate == pytest.approx(0.25)
    assert (interval.low, interval.high) == pytest.approx((0.25, 0.25))
    assert interval.method == "no spread" and "same value" in interval.note


def test_a_symmetric_sample_gives_the_normal_theory_interval():
    """Normal quantiles are symmetric about their mean: BCa's CI is then centred on the estimate and, for 400
    values, close to mean ± z·s/√n."""
    values = 0.5 + stats.norm.ppf((np.arange(400) + 0.5) / 400) * 0.2
    interval = mean_ci(values, n_resamples=4000, seed=1)
    half = Z * values.std(ddof=1) / math.sqrt(values.size)
    assert interval.method == "BCa"
    assert interval.estimate == pytest.approx(0.5)
    assert interval.low == pytest.approx(0.5 - half, abs=0.1 * half)
    assert interval.high == pytest.approx(0.5 + half, abs=0.1 * half)


def test_paired_differences_are_narrower_than_unpaired_ones_as_the_closed_forms_say():
    """Prompts differ a lot (sd 0.3) while the model is 0.1 better on each up to small noise (sd 0.02): pairing
    removes the prompts' spread. Each width is checked against its normal-theory closed form."""
    rng = np.random.default_rng(0)
    reference = rng.normal(0.5, 0.3, size=200)
    model = reference + 0.1 + rng.normal(0, 0.02, size=200)
    paired = difference_ci(model, reference, paired=True, n_resamples=4000)
    unpaired = difference_ci(model, reference, paired=False, n_resamples=4000)
    assert paired.estimate == unpaired.estimate == pytest.approx(np.mean(model - reference))
    paired_width = 2 * Z * np.std(model - reference, ddof=1) / math.sqrt(200)
    unpaired_width = 2 * Z * math.sqrt((np.var(model, ddof=1) + np.var(reference, ddof=1)) / 200)
    assert paired.high - paired.low == pytest.approx(paired_width, rel=0.15)
    assert unpaired.high - unpaired.low == pytest.approx(unpaired_width, rel=0.15)
    assert (paired.high - paired.low) < 0.2 * (unpaired.high - unpaired.low)


def test_a_skewed_small_sample_keeps_its_estimate_inside_the_interval():
    """Six prompts, one far out (the issue's within-prompt share case): the estimate must lie strictly inside."""
    values = [0.70, 0.71, 0.72, 0.73, 0.74, 1.0]
    interval = mean_ci(values, n_resamples=4000)
    assert interval.method == "BCa"
    assert interval.low < interval.estimate < interval.high


def test_nan_prompts_are_left_out_pairwise():
    model, reference = [1.0, math.nan, 3.0, 4.0], [0.5, 2.0, math.nan, 3.0]
    interval = difference_ci(model, reference)
    assert interval.n == 2 and interval.estimate == pytest.approx(0.75)


def test_too_few_prompts_give_no_interval_and_say_so():
    assert mean_ci([]).method == "none" and mean_ci([]).estimate is None
    one = mean_ci([0.3])
    assert one.estimate == 0.3 and one.low is None and "one prompt" in one.note


def test_the_percentile_interval_stands_in_only_where_bca_comes_back_undefined(monkeypatch):
    calls = []
    real = stats.bootstrap

    def bca_undefined(*args, method, **kwargs):
        calls.append(method)
        result = real(*args, method=method, **kwargs)
        if method == "BCa":
            warnings.warn(
                "The BCa confidence interval cannot be calculated.", stats.DegenerateDataWarning, stacklevel=2
            )
            result.confidence_interval = type(result.confidence_interval)(math.nan, math.nan)
        return result

    monkeypatch.setattr(bootstrap_module.stats, "bootstrap", bca_undefined)
    interval = mean_ci([0.1, 0.5, 0.2, 0.8], n_resamples=500)
    assert calls == ["BCa", "percentile"]
    assert interval.method == "percentile" and "BCa undefined here" in interval.note
    assert interval.low < interval.estimate < interval.high


# --- seeds ---------------------------------------------------------------------------------------------------------


def test_per_seed_and_pooled_differences():
    """Seed 0: the model is 0.1 above the reference on every prompt but the last (0.3); seed 1: 0.3 on every prompt.
    Pooled, per prompt the mean over seeds: 0.2, 0.2, 0.2, 0.3."""
    reference = np.array([0.2, 0.4, 0.6, 0.5])
    per_seed = {0: (reference + np.array([0.1, 0.1, 0.1, 0.3]), reference), 1: (reference + 0.3, reference)}
    result = seed_differences(per_seed, n_resamples=1000)
    assert result.per_seed[0].estimate == pytest.approx(0.15)
    assert result.per_seed[1].estimate == pytest.approx(0.3) and result.per_seed[1].method == "no spread"
    assert result.pooled.estimate == pytest.approx(0.225)
    assert result.pooled.low >= 0.2 - 1e-12 and result.pooled.high <= 0.3 + 1e-12
    assert result.seed_mean == pytest.approx(0.225)
    assert result.seed_std == pytest.approx(np.std([0.15, 0.3], ddof=1))
    one_seed = seed_differences({0: per_seed[0]})
    assert one_seed.seed_std is None
    assert one_seed.pooled == one_seed.per_seed[0]  # one seed: pooled is that seed's interval, same resamples
    # a prompt undefined at one seed is pooled from the other seeds only
    gappy = seed_differences({0: ([1.0, math.nan, 0.5], [0.0, 0.0, 0.0]), 1: ([3.0, 1.0, 0.5], [0.0, 0.0, 0.0])})
    assert gappy.pooled.estimate == pytest.approx(((1.0 + 3.0) / 2 + 1.0 + 0.5) / 3)


def test_seeds_must_cover_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        seed_differences({0: ([1.0, 2.0], [1.0, 2.0]), 1: ([1.0], [1.0])})


# --- dominance and frontiers ---------------------------------------------------------------------------------------


def test_dominance_names_the_pairs_and_a_point_that_beats_every_other():
    """The README's real-model case: GEM at T=1 (4.94 distinct answers, validity 0.78) beats CE at T=1.3 (4.12, 0.74)
    on both axes but not CE at 0.7, which keeps more validity."""
    gem = [Point(1.0, 4.94, 0.78)]
    ce = [Point(0.7, 3.1, 0.86), Point(1.3, 4.12, 0.74)]
    assert dominance(gem, ce) == {"pairs": [[1.0, 1.3]], "beats_all": []}
    assert dominance(ce, gem) == {"pairs": [], "beats_all": []}
    better = [Point(1.0, 5.0, 0.9)]
    assert dominance(better, ce)["beats_all"] == [1.0]
    # a metric where lower is more diverse (direction -1) turns the diversity axis round
    assert dominance(gem, ce, diversity_direction=-1)["pairs"] == []


def test_a_frontier_collapsing_to_one_point_is_reported_as_such():
    """The issue's SmolLM2 case: each model's 0.7 point is beaten by its 1.0 point on both axes."""
    points = [Point(0.7, 0.40, 0.50), Point(1.0, 0.55, 0.60)]
    result = frontier(points)
    assert result["single_point"] and result["efficient"] == [1.0]
    assert result["dominated"] == {"0.7": [1.0]}
    # two temperatures giving one and the same point: still one efficient point, both temperatures named
    tied = frontier([Point(0.7, 0.40, 0.50), Point(1.0, 0.55, 0.60), Point(1.3, 0.55, 0.60)])
    assert tied["single_point"] and tied["efficient"] == [1.0, 1.3]
    assert single_point_label(tied["efficient"]) == "T=1, 1.3 (one and the same point)"
    curve = frontier([Point(0.7, 0.40, 0.70), Point(1.0, 0.55, 0.60), Point(1.3, 0.50, 0.50)])
    assert not curve["single_point"] and curve["efficient"] == [0.7, 1.0]
    assert curve["dominated"] == {"1.3": [1.0]}


# --- the calibrated comparison on models with known answer distributions -------------------------------------------


class Categorical:
    """A model answering each prompt from softmax(scale · logits / T): diversity is the answers' entropy, quality
    the probability of a valid answer — exact, no sampling."""

    def __init__(self, logits: dict[str, np.ndarray], valid: dict[str, np.ndarray], scale: float = 1.0) -> None:
        self.logits, self.valid, self.scale = logits, valid, scale
        self.calls: list[tuple[str, float]] = []

    def probabilities(self, prompt_set: str, temperature: float) -> np.ndarray:
        z = self.scale * self.logits[prompt_set] / temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def axes(self, prompt_set: str, temperature: float) -> Axes:
        self.calls.append((prompt_set, temperature))
        p = self.probabilities(prompt_set, temperature)
        entropy = -(p * np.log(p)).sum(axis=1)
        return Axes(entropy, (p * self.valid[prompt_set]).sum(axis=1))


def answer_logits(seed: int, prompts: int = 12, answers: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.5, size=(prompts, answers))


LOGITS = {"calibration": answer_logits(1), "evaluation": answer_logits(2)}
TOP_TWO = {k: (v >= np.sort(v, axis=1)[:, [-2]]).astype(float) for k, v in LOGITS.items()}  # the two likeliest
TOP_ONE = {k: (v >= v.max(axis=1, keepdims=True)).astype(float) for k, v in LOGITS.items()}
EVALUATION = EvaluationSpec(
    prompts="unused",
    calibration_prompts="unused",
    tolerance=1e-5,
    max_bisection_steps=40,
    temperature_range=(0.3, 2.5),
    n_bootstrap=500,
)


def test_a_sharpened_model_is_matched_at_its_scale_and_differs_by_the_closed_form():
    """The reference answers from softmax(l / T) with its likeliest answer valid. "sharp" is the same logits scaled
    by c = 1.7: at T = c it has exactly the reference's distribution at T = 1, so both bisections must land on 1.7.
    "sharp_wide" also counts the second likeliest answer as valid: at the reference's diversity (T = c) its quality
    is above the reference's by exactly the reference's probability of that second answer at T = 1."""
    c = 1.7
    reference = Categorical(LOGITS, TOP_ONE)
    models = {
        "ce": {0: reference},
        "sharp": {0: Categorical(LOGITS, TOP_ONE, scale=c)},
        "sharp_wide": {0: Categorical(LOGITS, TOP_TWO, scale=c)},
    }
    # sharp_wide's valid mass falls towards 2/6 as T grows: it meets the reference's quality only far out
    evaluation = dataclasses.replace(EVALUATION, temperature_range=(0.3, 50.0))
    results = compare_models(models, "ce", evaluation, grid=(0.7, 1.0, 1.3))
    seed = results["seeds"]["0"]
    sharp = seed["matched"]["sharp"]
    for axis in ("at_diversity", "at_quality"):
        assert sharp[axis]["status"] == "matched" and sharp[axis]["temperature"] == pytest.approx(c, rel=1e-4)
        # same distribution as the reference's on every evaluation prompt: no difference on either axis
        for name in ("quality_difference", "diversity_difference"):
            assert sharp[axis][name]["estimate"] == pytest.approx(0.0, abs=1e-4)
    wide = seed["matched"]["sharp_wide"]["at_diversity"]
    assert wide["temperature"] == pytest.approx(c, rel=1e-4)
    p = reference.probabilities("evaluation", 1.0)
    closed_form = (p * (TOP_TWO["evaluation"] - TOP_ONE["evaluation"])).sum(axis=1)
    assert wide["quality_per_prompt"] == pytest.approx((closed_form + (p * TOP_ONE["evaluation"]).sum(1)), abs=1e-4)
    assert wide["quality_difference"]["estimate"] == pytest.approx(closed_form.mean(), abs=1e-4)
    assert wide["quality_difference"]["ci_low"] > 0
    # at the reference's quality sharp_wide must run hotter than c, where its answers spread more
    at_quality = seed["matched"]["sharp_wide"]["at_quality"]
    assert at_quality["temperature"] > c and at_quality["diversity_difference"]["estimate"] > 0
    assert abs(at_quality["bisection"]["value"] - seed["targets"]["quality"]) <= 1e-5 * seed["targets"]["quality"]
    # the matched axis holds on the evaluation prompts: the check column is ~0
    assert wide["diversity_difference"]["estimate"] == pytest.approx(0.0, abs=1e-4)


class Plateau:
    """Every prompt: diversity T, quality `plateau(T)` shifted by `gain`; the reference (gain 0) is read at T = 1."""

    def __init__(self, gain: float = 0.0, prompts: int = 8) -> None:
        self.gain, self.prompts = gain, prompts

    def axes(self, prompt_set: str, temperature: float) -> Axes:
        spread = np.linspace(-0.01, 0.01, self.prompts)  # distinct prompts, the same mean
        quality = plateau(temperature, edge=1.2 + self.gain) + spread
        return Axes(np.full(self.prompts, temperature) + spread, quality)


def test_at_the_references_quality_a_model_is_read_at_the_hot_end_of_its_plateau():
    """The reference keeps its best quality up to T = 1.2, the other model up to T = 1.5. Both hold the reference's
    quality at T = 1, where a bisection would stop; read at the hot end of its plateau, the other model is 0.3–0.5
    more diverse (closed form: its plateau ends at 1.5, quality falls 0.5 per unit T, tolerance 2 % of 0.8)."""
    models = {"ce": {0: Plateau()}, "wide": {0: Plateau(gain=0.3)}}
    evaluation = dataclasses.replace(EVALUATION, tolerance=0.02, max_bisection_steps=8)
    entry = compare_models(models, "ce", evaluation, grid=(1.0,))["seeds"]["0"]["matched"]["wide"]["at_quality"]
    assert entry["status"] == "matched"
    last_holding = 1.5 + 0.02 * 0.8 / 0.5
    assert last_holding - 0.05 <= entry["temperature"] <= last_holding
    assert last_holding - 1 - 0.05 <= entry["diversity_difference"]["estimate"] <= last_holding - 1


def test_pooling_over_seeds_averages_the_per_seed_closed_forms():
    """Seed 0's model is the reference sharpened (difference 0), seed 1's also counts the second answer valid:
    pooled, the quality difference at matched diversity is half seed 1's closed form."""
    c = 1.3
    models = {
        "ce": {0: Categorical(LOGITS, TOP_ONE), 1: Categorical(LOGITS, TOP_ONE)},
        "gem": {0: Categorical(LOGITS, TOP_ONE, scale=c), 1: Categorical(LOGITS, TOP_TWO, scale=c)},
    }
    results = compare_models(models, "ce", EVALUATION, grid=(1.0,))
    p = Categorical(LOGITS, TOP_ONE).probabilities("evaluation", 1.0)
    second = (p * (TOP_TWO["evaluation"] - TOP_ONE["evaluation"])).sum(axis=1)
    pooled = results["pooled"]["gem"]["at_diversity"]
    assert pooled["difference_of"] == "quality" and pooled["unmatched_seeds"] == []
    assert pooled["per_seed"]["0"]["estimate"] == pytest.approx(0.0, abs=1e-4)
    assert pooled["per_seed"]["1"]["estimate"] == pytest.approx(second.mean(), abs=1e-4)
    assert pooled["pooled"]["estimate"] == pytest.approx(second.mean() / 2, abs=1e-4)
    assert pooled["seed_std"] == pytest.approx(second.mean() / math.sqrt(2), abs=1e-4)


def test_a_model_that_cannot_reach_the_reference_is_reported_unmatched():
    """Scaled by 20, no temperature up to 2.5 spreads the answers as much as the reference's at T = 1."""
    models = {"ce": {0: Categorical(LOGITS, TOP_ONE)}, "peaked": {0: Categorical(LOGITS, TOP_ONE, scale=20.0)}}
    results = strict_json(compare_models(models, "ce", EVALUATION, grid=(1.0,)))
    entry = results["seeds"]["0"]["matched"]["peaked"]["at_diversity"]
    assert entry["temperature"] is None and entry["status"] == "not reached"
    assert entry["bisection"]["outcome"] == "out of range" and "above" in entry["bisection"]["reason"]
    assert "quality_difference" not in entry
    assert results["pooled"]["peaked"]["at_diversity"]["unmatched_seeds"] == [0]
    text = calibration_markdown(results)
    assert "not matched: target" in text
    json.dumps(results, allow_nan=False)


def test_the_markdown_names_single_point_frontiers_and_dominance():
    """A model whose answers barely change with temperature but whose quality falls as it rises beyond 1 ..."""

    class Fixed:
        def __init__(self, table):
            self.table = table

        def axes(self, prompt_set, temperature):
            d, q = self.table(temperature)
            return Axes(np.full(4, d), np.full(4, q))

    # ce: more diverse and better from 0.7 to 1.0 (one efficient point, T=1); gem: a proper curve above it
    ce = Fixed(lambda t: (min(t, 1.0), 0.5 if t < 1 else 0.6 - 0.1 * (t - 1)))
    gem = Fixed(lambda t: (t + 0.5, 1.0 - 0.2 * t))
    results = strict_json(compare_models({"ce": {0: ce}, "gem": {0: gem}}, "ce", EVALUATION, grid=(0.7, 1.0, 1.3)))
    assert results["seed_mean"]["frontiers"]["ce"]["single_point"]
    text = calibration_markdown(results)
    assert "ce's frontier is a single point (T=1)" in text
    assert "gem at T=0.7, T=1, T=1.3 beats every sampled point of ce on both axes." in text


# --- end to end on two tiny checkpoints ----------------------------------------------------------------------------

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", ":", "say", "a", "word"] + [f"w{i}" for i in range(30)]


@pytest.fixture
def tiny_comparison(tmp_path, monkeypatch):
    from chat_checkpoints import save_chat_checkpoint
    from divalign.smoke import write_jsonl

    monkeypatch.chdir(tmp_path)  # where my_quality.py lies, as `divalign eval --quality MODULE:FUNCTION` finds it
    (tmp_path / "my_quality.py").write_text("def words(completion, answer):\n    return len(completion.split())\n")
    write_jsonl(tmp_path / "calibration.jsonl", [{"prompt": f"say a word w{i}"} for i in range(3)])
    write_jsonl(tmp_path / "evaluation.jsonl", [{"prompt": f"say a word w{i}"} for i in range(3, 6)])
    models = {name: {0: save_chat_checkpoint(tmp_path / name, WORDS, seed)} for seed, name in enumerate(("ce", "gem"))}
    evaluation = EvaluationSpec(
        prompts=str(tmp_path / "evaluation.jsonl"),
        calibration_prompts=str(tmp_path / "calibration.jsonl"),
        samples=3,
        max_new_tokens=5,
        quality="my_quality:words",
        diversity_metric="distinct_1",
        max_bisection_steps=2,
        tolerance=0.001,  # tighter than 3 prompts × 3 samples can hit: the bisection runs its steps
        n_bootstrap=200,
    )
    return models, evaluation, tmp_path / "report"


def test_calibrated_comparison_of_two_tiny_checkpoints_is_strict_json_and_reruns_from_its_cache(
    tiny_comparison, monkeypatch
):
    from divalign.compare import calibration, sampled

    models, evaluation, out = tiny_comparison
    loaded = []
    real_open = sampled.open_sampler

    def counting(name, path, sampling):
        loaded.append(name)
        return real_open(name, path, sampling)

    monkeypatch.setattr(sampled, "open_sampler", counting)
    first = calibration.calibrated_comparison(models, "ce", evaluation, out, grid=(0.7, 1.3))
    assert loaded == ["ce (seed 0)", "gem (seed 0)"]  # each model loaded once, for all its temperatures
    text = json.dumps(first, allow_nan=False)
    assert first["diversity_metric"] == "distinct_1" and first["quality"] == "my_quality:words"
    assert first["prompts"] == {"calibration": 3, "evaluation": 3}
    seed = first["seeds"]["0"]
    assert all(math.isfinite(v) for v in seed["targets"].values())
    for name, points in seed["grid"].items():
        assert [p["temperature"] for p in points] == [0.7, 1.0, 1.3], name
        assert all(math.isfinite(p["diversity"]) and math.isfinite(p["quality"]) for p in points)
    assert len(seed["matched"]["gem"]["at_diversity"]["bisection"]["evaluations"]) > 1  # it bisected
    for axis in ("at_diversity", "at_quality"):
        entry = seed["matched"]["gem"][axis]
        measured = [t for t, _ in entry["bisection"]["evaluations"]]
        # diversity from the reference's temperature; quality from the range's upper end (where it may hold), then
        # from that temperature
        opening = [1.0] if axis == "at_diversity" else [2.5] if entry["status"] == "range end" else [2.5, 1.0]
        assert measured[: len(opening)] == opening, axis
        if entry["temperature"] is not None:
            assert entry["quality_difference"]["estimate"] is not None
    assert (out / "calibrated_frontiers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cached = sorted(p.relative_to(out) for p in (out / "samples").rglob("*.json"))
    measured = {
        t
        for axis in ("at_diversity", "at_quality")
        for t, _ in seed["matched"]["gem"][axis]["bisection"]["evaluations"]
    }
    gem_calibration = {p.name for p in cached if p.parts[1:3] == ("gem", "seed0") and p.name.startswith("calibration")}
    assert gem_calibration == {f"calibration@T{t:.10g}.json" for t in measured}
    assert first["figure_link"] == "report/calibrated_frontiers.png"  # from beside out_dir, where the report lies
    assert "![calibrated frontiers](report/calibrated_frontiers.png)" in calibration.calibration_markdown(first)

    def no_loading(*args, **kwargs):
        raise AssertionError("a rerun must read every sample from the cache, not load a model")

    monkeypatch.setattr(sampled, "open_sampler", no_loading)
    again = calibration.calibrated_comparison(models, "ce", evaluation, out, grid=(0.7, 1.3))
    assert json.dumps(again, allow_nan=False) == text
    assert sorted(p.relative_to(out) for p in (out / "samples").rglob("*.json")) == cached


def test_a_second_report_naming_the_first_ones_samples_dir_reads_its_samples_and_loads_no_model(
    tiny_comparison, monkeypatch, tmp_path
):
    from divalign.compare import calibration, sampled

    models, evaluation, out = tiny_comparison
    first = calibration.calibrated_comparison(models, "ce", evaluation, out, grid=(1.3,))
    cached = sorted(p.relative_to(out) for p in (out / "samples").rglob("*.json"))

    def no_loading(*args, **kwargs):
        raise AssertionError("the shared cache holds every sample this report needs")

    monkeypatch.setattr(sampled, "open_sampler", no_loading)
    shared = dataclasses.replace(evaluation, samples_dir=str(out / "samples"))
    other = tmp_path / "other_report"
    second = calibration.calibrated_comparison(models, "ce", shared, other, grid=(1.3,))
    assert second["seeds"] == first["seeds"]
    assert not (other / "samples").exists()
    assert sorted(p.relative_to(out) for p in (out / "samples").rglob("*.json")) == cached


def test_a_missing_reference_or_quality_is_refused_before_any_model_loads(tiny_comparison, monkeypatch):
    from divalign.compare import calibration, sampled

    def no_loading(*args, **kwargs):
        raise AssertionError("refused input must not load a model")

    monkeypatch.setattr(sampled, "open_sampler", no_loading)
    models, evaluation, out = tiny_comparison
    with pytest.raises(ValueError, match="reference variant 'base' has no finished cell"):
        calibration.calibrated_comparison(models, "base", evaluation, out)
    with pytest.raises(ValueError, match="evaluation needs a quality"):
        calibration.calibrated_comparison(models, "ce", dataclasses.replace(evaluation, quality=None), out)
    with pytest.raises(ValueError, match=r"reference_temperature 3\.0 lies outside temperature_range"):
        calibration.calibrated_comparison(models, "ce", dataclasses.replace(evaluation, reference_temperature=3.0), out)
    with pytest.raises(FileNotFoundError, match="Model 'gem \\(seed 1\\)': no checkpoint directory"):
        calibration.calibrated_comparison({**models, "gem": {1: out / "nowhere"}}, "ce", evaluation, out)
    assert not out.exists()


def test_a_retrained_cell_or_changed_evaluation_is_sampled_afresh_not_read_from_a_stale_cache(
    tiny_comparison, monkeypatch
):
    from chat_checkpoints import save_chat_checkpoint
    from divalign.compare import calibration, sampled

    models, evaluation, out = tiny_comparison
    evaluation = dataclasses.replace(evaluation, max_bisection_steps=0)
    calibration.calibrated_comparison(models, "ce", evaluation, out, grid=())
    loaded = []
    real_open = sampled.open_sampler
    monkeypatch.setattr(sampled, "open_sampler", lambda name, *a: loaded.append(name) or real_open(name, *a))
    save_chat_checkpoint(models["gem"][0], WORDS, seed=7)  # the gem cell retrained in place
    calibration.calibrated_comparison(models, "ce", evaluation, out, grid=())
    assert loaded == ["gem (seed 0)"]
    loaded.clear()
    calibration.calibrated_comparison(models, "ce", dataclasses.replace(evaluation, samples=2), out, grid=())
    assert loaded == ["ce (seed 0)", "gem (seed 0)"]
    assert len(list((out / "samples" / "gem" / "seed0").iterdir())) == 3  # every earlier sample kept


def test_the_statistics_and_the_comparison_load_without_torch():
    """statistics.py is pure numpy/scipy, and calibration.py loads the samplers only for real checkpoints."""
    import subprocess
    import sys

    code = (
        "import sys, divalign.compare.statistics, divalign.compare.calibration; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
