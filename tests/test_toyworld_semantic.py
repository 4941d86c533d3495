"""In the toy world every answer is a single item, so its semantic cluster count must be its number of distinct
answers: checked on every prompt's full answer set with the offline all-MiniLM-L6-v2 at the default threshold."""

import numpy as np
import pytest

from divalign.diversity import DEFAULT_CLUSTER_THRESHOLD, compute_diversity, load_embedder
from divalign.toyworld.world import ToyWorld, WorldConfig


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("all-MiniLM-L6-v2")


def test_semantic_clusters_count_the_distinct_toy_answers(minilm):
    world = ToyWorld(WorldConfig())
    rng = np.random.default_rng(0)
    groups, distinct = [], []
    for prompt in world.prompts:
        answers = list(prompt.answers)
        # every valid answer, some of them repeated, in a shuffled order: 24 distinct items among 32 samples
        samples = answers + [answers[i] for i in rng.integers(0, len(answers), size=8)]
        groups.append([samples[i] for i in rng.permutation(len(samples))])
        distinct.append(len(set(samples)))
    scores = compute_diversity(groups, metrics=["semantic_clusters"], embedder=minilm)
    assert scores["semantic_clusters"] == pytest.approx(np.mean(distinct))
    assert scores["semantic_clusters_p10"] == scores["semantic_clusters_p90"] == 24  # every prompt, not on average


def test_closest_distinct_toy_answers_stay_below_the_threshold(minilm):
    """The margin the count relies on (the clusters module's documented figure): the most similar pair of different
    answers to one prompt (sofa / couch) is at cosine 0.86, below the threshold 0.9."""
    closest = 0.0
    for prompt in ToyWorld(WorldConfig()).prompts:
        emb = minilm.encode(list(prompt.answers))
        cosine = emb @ emb.T
        np.fill_diagonal(cosine, -1.0)
        closest = max(closest, float(cosine.max()))
    assert closest < 0.86 < DEFAULT_CLUSTER_THRESHOLD
