"""`compute_diversity`: key layout, errors, one encode call, across-prompt variants."""

import math

import numpy as np
import pytest

from divalign.diversity import (
    DEFAULT_TRAINING_METRICS,
    METRIC_NAMES,
    REGISTRY,
    compute_diversity,
    distinct_n,
    score_groups,
)


class CountingEmbedder:
    """Deterministic fake: one-hot-ish embedding per distinct text; records each encode call."""

    def __init__(self):
        self.calls = []
        self.index = {}

    def encode(self, texts):
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            row = np.zeros(16)
            row[self.index.setdefault(t, len(self.index)) % 16] = 1.0
            rows.append(row)
        return np.array(rows).reshape(len(texts), 16)


GROUPS = [["a b c", "a b c", "a b c"], ["x y", "z w", "u v"]]
IDS = [[[1, 2, 3]] * 3, [[4, 5], [6, 7], [8, 9]]]


def test_default_metric_names_are_valid_and_cheap():
    assert set(DEFAULT_TRAINING_METRICS) <= set(METRIC_NAMES)
    assert "nli" not in DEFAULT_TRAINING_METRICS
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)


def test_defaults_flat_dict_and_one_encode_call():
    embedder = CountingEmbedder()
    out = compute_diversity(GROUPS, IDS, vocab_size=100, embedder=embedder)
    assert len(embedder.calls) == 1 and len(embedder.calls[0]) == 6
    for name in DEFAULT_TRAINING_METRICS:
        assert {name, f"{name}_p10", f"{name}_p90"} <= out.keys()
    assert "length_mean_across" not in out  # length over one sample per prompt says nothing about diversity
    # Prompt 0: identical samples; prompt 1: disjoint samples.
    assert out["distinct_1"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["exact_dup_rate"] == pytest.approx(0.5)
    assert out["sbert"] == pytest.approx(0.5)  # 0 for identical, 1 for orthogonal
    assert out["vendi_1"] == pytest.approx((1 + 3) / 2)
    assert out["length_mean"] == pytest.approx(2.5)
    # Across prompts (first samples "a b c" and "x y") everything is distinct.
    assert out["distinct_1_across"] == 1.0
    assert out["exact_dup_rate_across"] == 0.0
    assert out["sbert_across"] == pytest.approx(1.0)


def test_identical_groups_give_minimal_diversity():
    embedder = CountingEmbedder()
    out = compute_diversity(
        [["same text"] * 4] * 2, [[[3, 4]] * 4] * 2, metrics=["distinct_1", "exact_dup_rate", "sbert", "vendi_1",
                                                            "vendi_inf", "self_bleu"], vocab_size=10,
        embedder=embedder,
    )  # fmt: skip
    assert out["distinct_1"] == pytest.approx(0.25)
    assert out["exact_dup_rate"] == 1.0
    assert out["sbert"] == pytest.approx(0.0)
    assert out["vendi_1"] == pytest.approx(1.0) and out["vendi_inf"] == pytest.approx(1.0)
    assert out["self_bleu"] == pytest.approx(1.0)


def test_prefix_and_ead_metrics():
    ids = [[[1, 2, 3, 4], [1, 2]]]
    out = compute_diversity([["t1", "t2"]], ids, metrics=["distinct_1_prefix", "distinct_1", "ead_1"], vocab_size=4)
    assert out["distinct_1_prefix"] == pytest.approx(0.5)
    assert out["distinct_1"] == pytest.approx(distinct_n(ids[0], 1))
    assert out["ead_1"] == pytest.approx(4 / (4 * (1 - (3 / 4) ** 6)))


def test_unknown_metric_lists_valid_names():
    with pytest.raises(ValueError, match=r"bogus.*valid names:.*distinct_1"):
        compute_diversity(GROUPS, IDS, metrics=["distinct_1", "bogus"])


@pytest.mark.parametrize(
    ("metrics", "kwargs", "needed"),
    [
        (["sbert"], {}, "embedder"),
        (["distinct_2"], {}, "token_ids"),
        (["ead"], {"token_ids": IDS}, "vocab_size"),
        (["pass_at_1"], {}, "verifier"),
        (["nli"], {}, "nli_scorer"),
    ],
)
def test_missing_resource_is_a_clear_error(metrics, kwargs, needed):
    with pytest.raises(ValueError, match=rf"{metrics[0]}.*{needed}"):
        compute_diversity(GROUPS, metrics=metrics, **kwargs)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        compute_diversity(GROUPS, [[[1]], [[2]]], metrics=["distinct_1"])


def test_verifier_metrics():
    groups = [["4", "4", "5", "6"], ["1", "2", "3", "4"]]
    answers = ["4", "9"]
    out = compute_diversity(
        groups, metrics=["pass_at_1", "pass_at_2", "pass_at_k", "unique_answers"],
        verifier=lambda text, i: text == answers[i],
    )  # fmt: skip
    assert out["pass_at_1"] == pytest.approx((2 / 4 + 0) / 2)
    assert out["pass_at_2"] == pytest.approx((1 - 1 / 6 + 0) / 2)  # 1 - C(2,2)/C(4,2) for prompt 0
    assert out["pass_at_k"] == pytest.approx(0.5)
    assert out["unique_answers"] == pytest.approx((3 + 4) / 2)
    assert "pass_at_1_across" not in out


def test_single_sample_prompts_give_nan_not_errors():
    scores = score_groups([["only"], ["one"]], [[[1]], [[2]]], metrics=["sbert", "distinct_1"],
                          embedder=CountingEmbedder())  # fmt: skip
    assert np.isnan(scores.per_prompt["sbert"]).all()
    summary = scores.summary()
    assert math.isnan(summary["sbert"])
    assert summary["sbert_across"] == pytest.approx(1.0)
    assert summary["distinct_1"] == 1.0


class SameOrNot:
    """NLI stand-in: entailment for identical texts, contradiction otherwise (label order of NLIScorer)."""

    def probabilities(self, premises, hypotheses):
        return np.array(
            [[0.9, 0.05, 0.05] if p == h else [0.05, 0.05, 0.9] for p, h in zip(premises, hypotheses, strict=True)]
        )


def test_across_metrics_read_each_prompts_first_sample():
    """Every prompt's first sample is "a b c d e"; all its other samples differ from everything. Each `<name>_across`
    equals the metric of the group made of the first samples (fully repetitive: distinct-1 5/15, duplicates 1,
    SBERT 0, Vendi 1), and taking any other sample per prompt would give a different value (all distinct)."""
    first = "a b c d e"
    groups = [[first, f"x{p} y{p} z{p} u{p} q{p}", f"v{p} s{p} t{p} r{p} o{p}"] for p in range(3)]
    vocabulary: dict[str, int] = {}
    ids = [[[vocabulary.setdefault(w, len(vocabulary)) for w in t.split()] for t in g] for g in groups]
    names = [n for n in METRIC_NAMES if REGISTRY[n].across and not REGISTRY[n].needs & {"verifier"}]
    resources = dict(vocab_size=len(vocabulary), embedder=CountingEmbedder(), nli_scorer=SameOrNot())
    out = compute_diversity(groups, ids, metrics=names, **resources)
    assert {f"{n}_across" for n in names} <= out.keys()
    assert out["distinct_1_across"] == pytest.approx(5 / 15) and out["exact_dup_rate_across"] == 1.0
    assert out["sbert_across"] == pytest.approx(0.0) and out["vendi_1_across"] == pytest.approx(1.0)
    for position in range(3):
        picked = compute_diversity(
            [[g[position] for g in groups]], [[i[position] for i in ids]], metrics=names, **resources
        )
        for name in names:
            assert not math.isnan(picked[name]), name
            same = out[f"{name}_across"] == pytest.approx(picked[name])
            assert same == (position == 0), (name, position)
