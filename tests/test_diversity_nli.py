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


@pytest.fixture
def tiny_nli_model(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat", "dog", "sat"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, num_labels=3,
                        id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
                        label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2})  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_nli_scorer_loads_lazily_and_reorders_labels(tiny_nli_model):
    scorer = NLIScorer(str(tiny_nli_model), batch_size=2)
    assert scorer._model is None  # building a scorer must not load anything
    probs = scorer.probabilities(["a cat sat", "a dog", "cat"], ["a dog sat", "a cat", "dog"])
    assert probs.shape == (3, 3)
    assert probs.sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    # the model's own label order is (contradiction, neutral, entailment): the scorer's columns must be its softmax
    # read in the order (entailment, neutral, contradiction); the raw probabilities differ per column, so any other
    # permutation fails
    raw = _raw_probabilities(tiny_nli_model, ["a cat sat", "a dog", "cat"], ["a dog sat", "a cat", "dog"])
    assert probs == pytest.approx(raw[:, [2, 1, 0]], abs=1e-6)
    assert not np.allclose(raw[:, [2, 1, 0]], raw, atol=1e-3)
    texts = ["a cat", "a dog", "dog sat"]
    pairs = [(a, b) for i, a in enumerate(texts) for j, b in enumerate(texts) if i != j]
    pair_probs = _raw_probabilities(tiny_nli_model, [p for p, _ in pairs], [h for _, h in pairs])
    # NLI diversity = mean over the 6 ordered pairs of P(contradiction) - P(entailment), from the model's own labels
    expected = float(np.mean(pair_probs[:, 0] - pair_probs[:, 2]))
    assert nli_diversity(texts, scorer) == pytest.approx(expected, abs=1e-6)


def _raw_probabilities(path, premises, hypotheses) -> np.ndarray:
    """Softmax of the classifier's logits, one pair at a time, in the model's own label order."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    rows = []
    for premise, hypothesis in zip(premises, hypotheses, strict=True):
        with torch.no_grad():
            rows.append(model(**tokenizer(premise, hypothesis, return_tensors="pt")).logits.softmax(-1)[0].numpy())
    return np.stack(rows)


def test_nli_scorer_bad_model_names_it(tmp_path):
    with pytest.raises(ValueError, match="missing-nli"):
        NLIScorer(str(tmp_path / "missing-nli")).load()
