"""NLI diversity (Stasaski & Hearst, "Semantic Diversity in Dialogue with Natural Language Inference", NAACL 2022).

An NLI model judges every ordered pair of samples; contradiction counts as diverse, entailment as redundant.
Expensive (K(K − 1) cross-encoder passes per prompt): meant for offline evaluation, not training-time logging.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_NLI_MODEL = "FacebookAI/roberta-large-mnli"  # the model used in the Olmo-3 diversity study


class NLIScorer:
    """Lazily loaded NLI cross-encoder (sentence-transformers' ``CrossEncoder``) returning P(entailment),
    P(neutral), P(contradiction) per pair.

    The model is loaded on first use, so building a scorer costs nothing when the `nli` metric is never computed.
    Checkpoints order their three labels differently (roberta-large-mnli: contradiction, neutral, entailment); the
    columns are picked by the label names of the model's config.
    """

    def __init__(self, model_name_or_path: str = DEFAULT_NLI_MODEL, device: str | None = None, batch_size: int = 32):
        self.model_name_or_path = model_name_or_path
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._label_index: tuple[int, int, int] | None = None

    def load(self) -> None:
        """Load the model now (e.g. to fail fast before a long sampling run); otherwise done on first use."""
        from sentence_transformers import CrossEncoder

        try:
            model = CrossEncoder(self.model_name_or_path, device=self.device or "cpu")
        except (OSError, ValueError) as err:
            raise ValueError(
                f"Could not load NLI model {self.model_name_or_path!r}: expected a local directory or cached Hub id "
                f"of a sequence-classification model with entailment/neutral/contradiction labels. Cause: {err}"
            ) from err
        self._label_index = _label_indices(model.config.id2label, self.model_name_or_path)
        self._model = model

    def probabilities(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """(n, 3) array of [P(entailment), P(neutral), P(contradiction)] for each (premise, hypothesis) pair."""
        if self._model is None:
            self.load()
        if not premises:
            return np.zeros((0, 3))
        probs = self._model.predict(
            list(zip(premises, hypotheses, strict=True)),
            batch_size=self.batch_size,
            apply_softmax=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return probs[:, list(self._label_index)]


def _label_indices(id2label: dict[int, str], name: str) -> tuple[int, int, int]:
    """Indices of the entailment, neutral and contradiction logits, read from the model config's label names."""
    found: dict[str, int] = {}
    for idx, label in id2label.items():
        for key in ("entail", "neutral", "contradict"):
            if str(label).lower().startswith(key):
                found[key] = int(idx)
    if len(found) != 3:
        raise ValueError(
            f"NLI model {name!r} has labels {dict(id2label)}; expected entailment, neutral and contradiction labels."
        )
    return found["entail"], found["neutral"], found["contradict"]


def nli_diversity(texts: Sequence[str], scorer: NLIScorer) -> float:
    """Confidence-weighted NLI diversity: mean over ordered pairs i ≠ j of P(contradiction) − P(entailment).

    Stasaski & Hearst (2022) sum +1/−1 over the predicted labels; averaging the probabilities over pairs keeps the
    score in [−1, 1] and comparable across K. Higher = more diverse. NaN for fewer than two samples.
    """
    pairs = [(a, b) for i, a in enumerate(texts) for j, b in enumerate(texts) if i != j]
    if not pairs:
        return math.nan
    probs = scorer.probabilities([p for p, _ in pairs], [h for _, h in pairs])
    return float(np.mean(probs[:, 2] - probs[:, 0]))


# Karouzos et al.'s sentence boundary: a run of . ! ? followed by whitespace, or a run of newlines
_SENTENCE_END = re.compile(r"[.!?]+\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences as Karouzos et al.'s code cuts them (carriage returns and tabs read as spaces); the whole stripped
    text when no boundary leaves a non-empty piece; nothing for a blank text."""
    cleaned = text.replace("\r", " ").replace("\t", " ")
    sentences = [piece.strip() for piece in _SENTENCE_END.split(cleaned) if piece.strip()]
    return sentences or ([cleaned.strip()] if cleaned.strip() else [])


def aligned_sentence_pairs(
    first: str, second: str, max_pairs: int, rng: np.random.Generator | None = None
) -> list[tuple[str, str]]:
    """Up to `max_pairs` index-aligned sentence pairs (the i-th sentence of each text) over the first
    min(#sentences) positions; when there are more positions than `max_pairs`, `rng` picks which (randomly, as the
    paper's code does; the first ones when `rng` is None)."""
    a, b = split_sentences(first), split_sentences(second)
    positions = min(len(a), len(b))
    if positions > max_pairs:
        chosen = sorted(rng.choice(positions, size=max_pairs, replace=False)) if rng is not None else range(max_pairs)
    else:
        chosen = range(positions)
    return [(a[i], b[i]) for i in chosen]


def nli_sentence_diversity(texts: Sequence[str], scorer: NLIScorer, max_pairs: int = 3, seed: int = 0) -> float:
    """NLI diversity as Karouzos et al. (arXiv 2604.16027) compute it, on [0, 2]: for every unordered pair of samples,
    up to `max_pairs` index-aligned sentence pairs (`aligned_sentence_pairs`, the positions drawn from a generator
    keyed by `seed` and the pair's indices); each sentence pair's similarity is P(entailment) − P(contradiction)
    averaged over both directions; the score is 1 − the mean similarity over all sentence pairs of all sample pairs.
    0 = every pair entails, 2 = every pair contradicts. 0.0 when no sample pair has a sentence, as in the paper's code.
    """
    premises, hypotheses = [], []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            rng = np.random.default_rng([seed, i, j])
            for a, b in aligned_sentence_pairs(texts[i], texts[j], max_pairs, rng):
                premises += [a, b]
                hypotheses += [b, a]
    if not premises:
        return 0.0
    probs = scorer.probabilities(premises, hypotheses)
    similarity = (probs[:, 0] - probs[:, 2]).reshape(-1, 2).mean(axis=1)
    return float(1.0 - similarity.mean())
