"""NLI diversity: the pairwise formula with a fake scorer, and NLIScorer on a tiny local classifier."""

import math

import numpy as np
import pytest

from divalign.diversity import NLIScorer, compute_diversity, nli_diversity


class FakeScorer:
    """P(contradiction) = 1 when premise and hypothesis differ, P(entailment) = 1 when equal."""

    def __init__(self):
        self.pairs = []

    def probabilities(self, premises, hypotheses):
        self.pairs += list(zip(premises, hypotheses, strict=True))
        return np.array(
            [[1.0, 0.0, 0.0] if p == h else [0.0, 0.0, 1.0] for p, h in zip(premises, hypotheses, strict=True)]
        )


def test_nli_diversity_over_ordered_pairs():
    scorer = FakeScorer()
    # Ordered pairs: (a,a) twice → entailment (−1), the other 4 → contradiction (+1): mean (4 − 2) / 6.
    assert nli_diversity(["a", "a", "b"], scorer) == pytest.approx(2 / 6)
    assert len(scorer.pairs) == 6
    assert nli_diversity(["x", "x"], FakeScorer()) == pytest.approx(-1.0)
    assert math.isnan(nli_diversity(["x"], FakeScorer()))


def test_nli_through_compute_diversity():
    out = compute_diversity([["a", "b"], ["c", "c"]], metrics=["nli"], nli_scorer=FakeScorer())
    assert out["nli"] == pytest.approx(0.0)  # +1 and −1
    assert out["nli_across"] == pytest.approx(1.0)


def save_nli_model(directory, labels: list[str], bias: list[float]):
    """A tiny BERT classifier whose class scores ignore the text: zero classifier weights, so P = softmax(bias)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat", "dog", "sat"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_nli_model(tmp_path):
    return save_nli_model(tmp_path, ["CONTRADICTION", "NEUTRAL", "ENTAILMENT"], [0.0, 0.0, 0.0])


def test_nli_scorer_loads_lazily_and_reads_probabilities(tiny_nli_model):
    scorer = NLIScorer(str(tiny_nli_model), batch_size=2)
    assert scorer._model is None  # building a scorer must not load anything
    probs = scorer.probabilities(["a cat sat", "a dog", "cat"], ["a dog sat", "a cat", "dog"])
    assert probs.shape == (3, 3)
    assert probs == pytest.approx(np.full((3, 3), 1 / 3), abs=1e-6)  # equal class scores: uniform


# Every order of the three labels in a checkpoint's config, with scores that differ per class: a scorer reading the
# columns in any other order than by their names returns another permutation of the probabilities.
LABEL_ORDERS = [
    ["CONTRADICTION", "NEUTRAL", "ENTAILMENT"],  # roberta-large-mnli
    ["entailment", "neutral", "contradiction"],
    ["NEUTRAL", "CONTRADICTION", "ENTAILMENT"],
    ["contradiction", "entailment", "neutral"],
]


@pytest.mark.parametrize("labels", LABEL_ORDERS, ids=lambda labels: "-".join(label[:3].lower() for label in labels))
def test_nli_scorer_reorders_columns_by_label_name(tmp_path, labels):
    scores = {"entailment": 2.0, "neutral": 0.5, "contradiction": -1.0}
    bias = [scores[label.lower()] for label in labels]
    scorer = NLIScorer(str(save_nli_model(tmp_path, labels, bias)), batch_size=2)
    total = sum(math.exp(v) for v in scores.values())
    expected = [math.exp(scores[name]) / total for name in ("entailment", "neutral", "contradiction")]
    probs = scorer.probabilities(["a cat sat", "a dog", "cat"], ["a dog sat", "a cat", "dog"])
    assert probs == pytest.approx(np.tile(expected, (3, 1)), abs=1e-6)
    # P(contradiction) − P(entailment) on every ordered pair
    assert nli_diversity(["a cat", "a dog", "dog sat"], scorer) == pytest.approx(expected[2] - expected[0], abs=1e-6)


def test_nli_scorer_bad_model_names_it(tmp_path):
    with pytest.raises(ValueError, match="missing-nli"):
        NLIScorer(str(tmp_path / "missing-nli")).load()
