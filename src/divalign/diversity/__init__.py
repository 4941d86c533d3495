"""Diversity metrics for sampled completions: K samples per prompt, aggregated over prompts.

Entry points: `compute_diversity` (flat dict for logging), `score_groups` (per-prompt values, for CIs),
`load_embedder`, `METRIC_NAMES`, `DEFAULT_TRAINING_METRICS`. Each metric is also a plain function in its module.
"""

from .aggregate import bootstrap_ci, summarize
from .answers import extract_final_answer, final_answer_matches, pass_at_k, unique_answers
from .embedding import Embedder, SentenceTransformerEmbedder, load_embedder, sbert_diversity, vendi_score
from .ngrams import distinct_n, ead, ead_mean, truncate_to_common_length
from .nli import DEFAULT_NLI_MODEL, NLIScorer, nli_diversity
from .registry import (
    DEFAULT_EVAL_METRICS,
    DEFAULT_TRAINING_METRICS,
    METRIC_NAMES,
    REGISTRY,
    DiversityScores,
    compute_diversity,
    score_groups,
    validate_metrics,
)
from .self_bleu import self_bleu
from .surface import compression_ratio, exact_dup_rate, length_mean, length_std

__all__ = [
    "DEFAULT_EVAL_METRICS",
    "DEFAULT_NLI_MODEL",
    "DEFAULT_TRAINING_METRICS",
    "METRIC_NAMES",
    "REGISTRY",
    "DiversityScores",
    "Embedder",
    "NLIScorer",
    "SentenceTransformerEmbedder",
    "bootstrap_ci",
    "compression_ratio",
    "compute_diversity",
    "distinct_n",
    "ead",
    "ead_mean",
    "exact_dup_rate",
    "extract_final_answer",
    "final_answer_matches",
    "length_mean",
    "length_std",
    "load_embedder",
    "nli_diversity",
    "pass_at_k",
    "sbert_diversity",
    "score_groups",
    "self_bleu",
    "summarize",
    "truncate_to_common_length",
    "unique_answers",
    "validate_metrics",
    "vendi_score",
]
