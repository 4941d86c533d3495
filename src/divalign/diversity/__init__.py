"""Diversity metrics for sampled completions: K samples per prompt, aggregated over prompts.

Entry points: `compute_diversity` (flat dict for logging), `score_groups` (per-prompt values, for CIs),
`load_embedder`, `METRIC_NAMES`, `DEFAULT_TRAINING_METRICS`, the metric profiles (`PROFILES`, `get_profile`). Each
metric is also a plain function in its module; the cross-model (`homogeneity`) and within-prompt (`spread`) views
work on the embeddings of several prompts or models at once.
"""

from .aggregate import bootstrap_ci, summarize
from .answers import extract_final_answer, final_answer_matches, pass_at_k, unique_answers
from .clusters import DEFAULT_CLUSTER_THRESHOLD, embedding_clusters, nli_clusters
from .embedding import Embedder, SentenceTransformerEmbedder, load_embedder, sbert_diversity, vendi_score
from .homogeneity import cross_similarity, homogeneity_per_prompt, within_similarity
from .ngrams import distinct_n, ead, ead_mean, paper_words, truncate_to_common_length
from .nli import DEFAULT_NLI_MODEL, NLIScorer, nli_diversity, nli_sentence_diversity, split_sentences
from .profile import DEFAULT_PROFILE, PROFILE_NAMES, PROFILES, MetricProfile, get_profile, strip_think
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
from .spread import within_prompt_share
from .surface import compression_ratio, exact_dup_rate, length_mean, length_std

__all__ = [
    "DEFAULT_CLUSTER_THRESHOLD",
    "DEFAULT_EVAL_METRICS",
    "DEFAULT_NLI_MODEL",
    "DEFAULT_PROFILE",
    "DEFAULT_TRAINING_METRICS",
    "METRIC_NAMES",
    "PROFILES",
    "PROFILE_NAMES",
    "REGISTRY",
    "DiversityScores",
    "Embedder",
    "MetricProfile",
    "NLIScorer",
    "SentenceTransformerEmbedder",
    "bootstrap_ci",
    "compression_ratio",
    "compute_diversity",
    "cross_similarity",
    "distinct_n",
    "ead",
    "ead_mean",
    "embedding_clusters",
    "exact_dup_rate",
    "extract_final_answer",
    "final_answer_matches",
    "get_profile",
    "homogeneity_per_prompt",
    "length_mean",
    "length_std",
    "load_embedder",
    "nli_clusters",
    "nli_diversity",
    "nli_sentence_diversity",
    "paper_words",
    "pass_at_k",
    "sbert_diversity",
    "score_groups",
    "self_bleu",
    "split_sentences",
    "strip_think",
    "summarize",
    "truncate_to_common_length",
    "unique_answers",
    "validate_metrics",
    "vendi_score",
    "within_prompt_share",
    "within_similarity",
]
