"""Hand-computed cases for the text and token diversity metrics (no models)."""

import gzip
import math

import numpy as np
import pytest
import sacrebleu

from divalign.diversity import (
    bootstrap_ci,
    compression_ratio,
    distinct_n,
    ead,
    ead_mean,
    exact_dup_rate,
    extract_final_answer,
    final_answer_matches,
    length_mean,
    length_std,
    pass_at_k,
    self_bleu,
    summarize,
    truncate_to_common_length,
    unique_answers,
)
from divalign.diversity.aggregate import summarize_with_ci


def test_distinct_identical_samples_is_minimal():
    # K = 3 copies of a sample whose tokens are all different: only 1/K of the n-grams are new.
    seqs = [[1, 2, 3, 4]] * 3
    assert [distinct_n(seqs, n) for n in range(1, 5)] == pytest.approx([1 / 3] * 4)


def test_distinct_disjoint_samples_is_one():
    seqs = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [distinct_n(seqs, n) for n in range(1, 4)] == [1.0, 1.0, 1.0]


def test_distinct_known_counts_do_not_cross_sample_boundaries():
    seqs = [[1, 1, 2], [2, 1]]
    assert distinct_n(seqs, 1) == pytest.approx(2 / 5)  # unigrams 1,1,2,2,1
    assert distinct_n(seqs, 2) == pytest.approx(3 / 3)  # (1,1) (1,2) (2,1); no (2,2) across the boundary
    assert distinct_n(seqs, 3) == pytest.approx(1 / 1)
    assert math.isnan(distinct_n(seqs, 4))  # no 4-gram at all


def test_common_prefix_removes_length_effect():
    seqs = [[1, 2, 3, 4, 5, 6], [1, 2]]
    assert truncate_to_common_length(seqs) == [[1, 2], [1, 2]]
    assert distinct_n(truncate_to_common_length(seqs), 1) == pytest.approx(0.5)
    assert distinct_n(seqs, 1) == pytest.approx(6 / 8)


def test_ead_by_hand():
    # V = 4, unigrams 0,1,0,2: 3 distinct out of C = 4; expected distinct = 4 * (1 - (3/4)^4) = 175/64.
    assert ead([[0, 1], [0, 2]], 1, vocab_size=4) == pytest.approx(3 / (175 / 64))
    # Bigrams (0,1), (0,2): 2 distinct, C = 2, expected = 4 * (1 - (3/4)^2) = 7/4.
    assert ead([[0, 1], [0, 2]], 2, vocab_size=4) == pytest.approx(2 / (7 / 4))
    assert ead_mean([[0, 1], [0, 2]], vocab_size=4, max_n=2) == pytest.approx((3 / (175 / 64) + 8 / 7) / 2)


def test_ead_large_vocab_matches_distinct_for_few_ngrams():
    # With V >> C the expected number of distinct n-grams is ≈ C, so EAD ≈ distinct-n; the naive
    # (1 - ((V-1)/V)^C) loses precision here, the log1p/expm1 form must not.
    seqs = [[5, 6, 7], [5, 8, 9]]
    assert ead(seqs, 1, vocab_size=151_936) == pytest.approx(distinct_n(seqs, 1), rel=1e-4)


def test_exact_dup_rate():
    assert exact_dup_rate(["a", "a", "a"]) == 1.0
    assert exact_dup_rate(["a", "b", "c"]) == 0.0
    assert exact_dup_rate(["a", "a", "b"]) == pytest.approx(2 / 3)
    assert math.isnan(exact_dup_rate(["a"]))


def test_compression_ratio_compresses_the_joined_text_once():
    texts = ["the cat sat on the mat"] * 10
    raw = "\n".join(texts).encode()
    assert compression_ratio(texts) == pytest.approx(len(raw) / len(gzip.compress(raw, mtime=0)))
    varied = [f"sample {i}: {' '.join(str(i * j % 97) for j in range(6))}" for i in range(10)]
    assert compression_ratio(texts) > compression_ratio(varied)


def test_length_stats():
    assert length_mean([2, 4, 6]) == pytest.approx(4.0)
    assert length_std([2, 4, 6]) == pytest.approx(math.sqrt(8 / 3))


def test_self_bleu_uses_every_other_sample_as_a_separate_reference():
    texts = ["the cat sat on the mat", "the cat sat", "on the mat"]
    bleu = sacrebleu.metrics.BLEU(effective_order=True)
    expected = np.mean(
        [bleu.sentence_score(texts[i], [t for j, t in enumerate(texts) if j != i]).score for i in range(3)]
    )
    assert self_bleu(texts) == pytest.approx(expected / 100)
    # The trap: the others as ONE reference stream scores sample 0 against "the cat sat" only.
    single_stream = sacrebleu.corpus_bleu([texts[0]], [texts[1:]]).score
    multi_reference = bleu.sentence_score(texts[0], texts[1:]).score
    assert single_stream == pytest.approx(bleu.sentence_score(texts[0], [texts[1]]).score)
    assert multi_reference > single_stream + 10


def test_self_bleu_extremes():
    assert self_bleu(["a b c d e"] * 3) == pytest.approx(1.0)
    assert self_bleu(["alpha beta gamma", "delta epsilon zeta", "eta theta iota"]) == pytest.approx(0.0)
    assert math.isnan(self_bleu(["only one"]))


@pytest.mark.parametrize(("n", "c", "k"), [(4, 1, 2), (5, 2, 3), (10, 0, 1), (10, 10, 5), (16, 3, 8), (6, 4, 3)])
def test_pass_at_k_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_values_and_errors():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


def test_final_answers():
    assert extract_final_answer(r"so \boxed{\frac{1}{2}} is it") == r"\frac{1}{2}"
    assert extract_final_answer("steps...\n#### 1,234") == "1234"
    assert extract_final_answer("I think it is 42.") == "42"
    assert unique_answers([r"\boxed{42}", "The answer is 42.", "#### 41", "41"]) == 2
    assert final_answer_matches("so the total is 18 apples", "18")
    assert not final_answer_matches("so the total is 17", "18")


def test_summarize_percentiles_and_nan_skipping():
    stats = summarize([*range(11), math.nan])
    assert stats == pytest.approx({"mean": 5.0, "p10": 1.0, "p90": 9.0})
    assert all(math.isnan(v) for v in summarize([math.nan]).values())


def test_bootstrap_ci_contains_the_mean():
    values = np.random.default_rng(1).normal(0.4, 0.1, size=50)
    low, high = bootstrap_ci(values, n_resamples=2000, seed=0)
    assert low < values.mean() < high
    assert bootstrap_ci([0.3] * 5) == pytest.approx((0.3, 0.3))


def test_summary_with_ci_of_two_prompts_skipping_nan():
    """Prompts scoring 0 and 1 (and one undefined): a resample of two has mean 0 or 1 with probability 1/4 each, so
    the 2.5 % and 97.5 % quantiles of the resampled means are exactly 0 and 1."""
    stats = summarize_with_ci([0.0, 1.0, math.nan], n_resamples=1000, seed=0)
    assert stats == pytest.approx({"mean": 0.5, "p10": 0.1, "p90": 0.9, "ci_low": 0.0, "ci_high": 1.0})


def test_bootstrap_ci_covers_the_true_mean_95_percent_of_the_time():
    """Coverage, not width: over many samples of 50 prompts from a known distribution, the 95 % CI must contain the
    true mean in 95 % of them, within 3 binomial standard deviations (a 90 % interval, a CI from the spread of the
    values instead of the spread of their mean, or a resampling without replacement all fall outside)."""
    rng = np.random.default_rng(123)
    trials, true_mean = 2000, 0.4
    covered = 0
    for trial in range(trials):
        low, high = bootstrap_ci(rng.normal(true_mean, 0.1, size=50), n_resamples=1000, seed=trial)
        covered += low <= true_mean <= high
    tolerance = 3 * math.sqrt(0.95 * 0.05 / trials)  # ≈ 0.015
    assert covered / trials == pytest.approx(0.95, abs=tolerance)
