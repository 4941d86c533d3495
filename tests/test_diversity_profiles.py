"""Metric profiles: the karouzos2026 and tofu2026 conventions on cases computed by hand from the papers' descriptions,
the divalign default unchanged, and the profile threaded through `compute_diversity`."""

import math

import numpy as np
import pytest

from divalign.diversity import (
    PROFILES,
    compute_diversity,
    ead,
    ead_mean,
    get_profile,
    nli_diversity,
    nli_sentence_diversity,
    paper_words,
    self_bleu,
    split_sentences,
    strip_think,
)
from divalign.diversity.nli import aligned_sentence_pairs
from divalign.diversity.profile import embedding_model_for, load_profile_embedder


def expected_distinct(total: int, vocab: int) -> float:
    """V · (1 − ((V − 1)/V)^C), written out."""
    return vocab * (1 - ((vocab - 1) / vocab) ** total)


# ---------------------------------------------------------------------------------------------------------------
# the profiles themselves


def test_profiles_are_named_and_unknown_names_list_the_valid_ones():
    assert set(PROFILES) == {"divalign", "karouzos2026", "tofu2026"}
    assert get_profile(None).name == "divalign"
    with pytest.raises(ValueError, match=r"Unknown metric profile 'karouzos'.*divalign, karouzos2026, tofu2026"):
        get_profile("karouzos")
    assert embedding_model_for("divalign", None) == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedding_model_for("karouzos2026", "auto") == "sentence-transformers/all-mpnet-base-v2"
    assert embedding_model_for("karouzos2026", "local/dir") == "local/dir"


def test_the_papers_embedder_that_is_not_cached_is_a_clear_error():
    """Offline, with no copy of all-mpnet-base-v2 in the cache: the error names the profile, the model and the flag."""
    with pytest.raises(ValueError, match=r"'karouzos2026' metric profile .*all-mpnet-base-v2.*--embedding-model"):
        load_profile_embedder("karouzos2026", None)


# ---------------------------------------------------------------------------------------------------------------
# karouzos2026: reasoning stripped


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("<think>plan a, then b</think>\nThe answer is 4.", "The answer is 4."),
        ("<think>x</think>one <think>y</think>two", "one two"),
        ("the template opened it</think> Final: 7 ", "Final: 7"),  # only the closing tag is in the completion
        ("no reasoning here\n", "no reasoning here"),
        ("<think>never closed", "<think>never closed"),  # nothing to strip without a closing tag
    ],
)
def test_strip_think(text, kept):
    assert strip_think(text) == kept


def test_texts_are_stripped_before_every_text_metric():
    groups = [["<think>a</think>yes", "<think>b b</think>yes"]]
    assert compute_diversity(groups, metrics=["exact_dup_rate"])["exact_dup_rate"] == 0.0
    assert compute_diversity(groups, metrics=["exact_dup_rate"], profile="karouzos2026")["exact_dup_rate"] == 1.0

    class Recorder:
        def __init__(self):
            self.seen = []

        def encode(self, texts):
            self.seen += texts
            return np.eye(len(texts))

    recorder = Recorder()
    compute_diversity(groups, metrics=["sbert"], embedder=recorder, profile="karouzos2026")
    assert recorder.seen == ["yes", "yes"]
    # a verifier still judges the completion as generated, reasoning included
    judged = []
    scores = compute_diversity(
        groups, metrics=["pass_at_1"], verifier=lambda text, i: judged.append(text) or "b b" in text,
        profile="karouzos2026",
    )
    assert judged == groups[0] and scores["pass_at_1"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# karouzos2026: EAD over words, empty orders as 0, clamped


def test_paper_words_delete_periods_and_newlines():
    assert paper_words("Hello world.\nThe end.") == ["Hello", "worldThe", "end"]
    assert paper_words("3.14 is pi") == ["314", "is", "pi"]


def test_ead_karouzos_by_hand():
    """Words of ["a b a.", "a c"] = [a b a], [a c]; V = 10.
    n = 1: 3 distinct of 5 → 3 / (10 (1 − 0.9^5)) = 0.7326; n = 2: (a b) (b a) (a c) → 3 / 2.71 = 1.107, clamped to 1;
    n = 3: (a b a) → 1 / 1 = 1; n = 4, 5: no n-gram → 0. Mean over the five orders: 0.5465.
    divalign's conventions on the same words: the empty orders leave the mean and nothing is clamped: 0.9465."""
    words = [paper_words("a b a."), paper_words("a c")]
    n1, n2 = 3 / expected_distinct(5, 10), 3 / expected_distinct(3, 10)
    assert n1 == pytest.approx(0.73258, abs=1e-5) and n2 > 1
    assert ead_mean(words, 10, empty_orders="zero", clamp=True) == pytest.approx((n1 + 1 + 1 + 0 + 0) / 5)
    assert ead_mean(words, 10) == pytest.approx((n1 + n2 + 1) / 3)
    profile = compute_diversity(
        [["a b a.", "a c"]], metrics=["ead", "ead_2", "ead_4"], vocab_size=10, profile="karouzos2026"
    )
    assert profile["ead"] == pytest.approx((n1 + 1 + 1) / 5)
    assert profile["ead_2"] == 1.0 and profile["ead_4"] == 0.0  # no token ids needed: it counts words


def test_one_word_samples_score_at_most_a_fifth_under_karouzos():
    """Only order 1 has n-grams; its EAD is clamped at 1 and the four empty orders count as 0."""
    samples = ["yes", "no", "maybe", "sure"]
    assert ead([paper_words(t) for t in samples], 1, 2) > 1  # order 1 unclamped, with V = 2
    scores = compute_diversity([samples], metrics=["ead"], vocab_size=2, profile="karouzos2026")
    assert scores["ead"] == pytest.approx(0.2)


def test_default_ead_still_counts_token_ids_and_skips_empty_orders():
    ids = [[[5, 6], [5, 7]]]
    out = compute_diversity([["x", "y"]], ids, metrics=["ead"], vocab_size=10)
    n1, n2 = 3 / expected_distinct(4, 10), 2 / expected_distinct(2, 10)
    assert out["ead"] == pytest.approx((n1 + n2) / 2)
    with pytest.raises(ValueError, match="token_ids"):
        compute_diversity([["x", "y"]], metrics=["ead"], vocab_size=10)


# ---------------------------------------------------------------------------------------------------------------
# karouzos2026: NLI over index-aligned sentence pairs, on [0, 2]


class TableScorer:
    """P(entailment, neutral, contradiction) from a table of (premise, hypothesis); identical texts entail."""

    def __init__(self, table=None):
        self.table = table or {}
        self.calls = []

    def probabilities(self, premises, hypotheses):
        self.calls.append((list(premises), list(hypotheses)))
        pairs = zip(premises, hypotheses, strict=True)
        rows = [self.table.get((p, h), [1.0, 0.0, 0.0] if p == h else [0.0, 0.0, 1.0]) for p, h in pairs]
        return np.array(rows, dtype=float)


def test_split_sentences_like_the_paper():
    assert split_sentences("First one. Second!! Third?\n\nFourth") == ["First one", "Second", "Third", "Fourth"]
    assert split_sentences("End. ") == ["End"]
    assert split_sentences("v1.2 is out.") == ["v1.2 is out."]  # no whitespace after the inner period
    assert split_sentences("   ") == []


def test_nli_sentence_diversity_by_hand():
    """["A. B.", "A. C."]: sentences [A, B.] and [A, C.]; aligned pairs (A, A) and (B., C.).
    (A, A): entailment both ways, similarity 1. (B., C.): P(ent) − P(con) = 0.6 − 0.1 = 0.5 one way,
    0.2 − 0.6 = −0.4 the other, similarity 0.05. Diversity = 1 − mean(1, 0.05) = 0.475."""
    scorer = TableScorer({("B.", "C."): [0.6, 0.3, 0.1], ("C.", "B."): [0.2, 0.2, 0.6]})
    assert nli_sentence_diversity(["A. B.", "A. C."], scorer) == pytest.approx(0.475)
    ((premises, hypotheses),) = scorer.calls
    assert premises == ["A", "A", "B.", "C."] and hypotheses == ["A", "A", "C.", "B."]
    # the range: 0 when every pair entails, 2 when every pair contradicts; the default profile's range is [−1, 1]
    assert nli_sentence_diversity(["Same.", "Same."], TableScorer()) == 0.0
    assert nli_sentence_diversity(["One.", "Two.", "Three."], TableScorer()) == 2.0
    assert nli_diversity(["One.", "Two."], TableScorer()) == 1.0
    assert nli_diversity(["Same.", "Same."], TableScorer()) == -1.0


def test_nli_pairs_only_aligned_positions_and_at_most_three():
    first = "s0. s1. s2. s3. s4"
    second = "t0. t1. t2. t3. t4. t5"
    pairs = aligned_sentence_pairs(first, second, 3, np.random.default_rng(0))
    assert len(pairs) == 3 and len({a for a, _ in pairs}) == 3
    assert all(a[1:] == b[1:] for a, b in pairs)  # the i-th sentence with the i-th
    assert aligned_sentence_pairs("a. b", "c", 3) == [("a", "c")]  # min(#sentences) positions
    scorer = TableScorer()
    assert nli_sentence_diversity([first, second, ""], scorer) == 2.0  # the empty text adds no pair
    assert len(scorer.calls[0][0]) == 2 * 3
    assert nli_sentence_diversity(["", ""], TableScorer()) == 0.0  # no sentence at all: 0, as the paper's code


def test_nli_metric_follows_the_profile():
    groups = [["One. Two.", "One. Three."]]
    default = compute_diversity(groups, metrics=["nli"], nli_scorer=TableScorer())
    paper = compute_diversity(groups, metrics=["nli"], nli_scorer=TableScorer(), profile="karouzos2026")
    assert default["nli"] == 1.0  # whole texts differ: contradiction both ways
    assert paper["nli"] == pytest.approx(1 - (1 + -1) / 2)  # (One, One) entails, (Two., Three.) contradicts


# ---------------------------------------------------------------------------------------------------------------
# tofu2026: the TOFU authors' self-BLEU


def test_tofu_self_bleu_lowercases_reads_newlines_as_spaces_and_keeps_0_100():
    """The TOFU authors' evaluation: sacrebleu BLEU(tokenize='13a', lowercase=True, effective_order=True), every
    newline replaced by a space first, the mean sentence score on 0–100."""
    cased = ["Yes it is", "yes it is"]
    assert self_bleu(cased, lowercase=True, scale=100) == pytest.approx(100.0)  # identical once lowercased
    assert self_bleu(cased) < 1.0
    # 13a alone deletes "-\n" ("co-\noperate" → "cooperate"); replacing newlines first keeps "co- operate"
    hyphen = ["co-\noperate now", "co- operate now"]
    assert self_bleu(hyphen, newlines_as_spaces=True) == pytest.approx(1.0)
    assert self_bleu(hyphen) < 1.0
    scores = compute_diversity([["A Cat sat", "a cat sat", "a cat sat"]], metrics=["self_bleu"], profile="tofu2026")
    assert scores["self_bleu"] == pytest.approx(100.0)
    assert compute_diversity([["A Cat sat", "a cat sat"]], metrics=["self_bleu"])["self_bleu"] < 1.0


def test_the_default_profile_is_divalign():
    groups = [["<think>a</think>Yes. It is", "yes it is."]]
    assert compute_diversity(groups, metrics=["self_bleu", "exact_dup_rate"]) == compute_diversity(
        groups, metrics=["self_bleu", "exact_dup_rate"], profile="divalign"
    )
    assert math.isnan(compute_diversity([["only one"]], metrics=["self_bleu"], profile="tofu2026")["self_bleu"])
