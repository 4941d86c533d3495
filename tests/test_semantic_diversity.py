"""Genuine vs surface diversity: semantic clusters, cross-model homogeneity and the within-prompt share of spread,
on hand-made embeddings (closed forms) and on the offline all-MiniLM-L6-v2 (the documented threshold)."""

import math

import numpy as np
import pytest

from divalign.diversity import (
    DEFAULT_CLUSTER_THRESHOLD,
    compute_diversity,
    cross_similarity,
    embedding_clusters,
    homogeneity_per_prompt,
    load_embedder,
    nli_clusters,
    within_prompt_share,
    within_similarity,
)
from divalign.diversity.spread import prompt_moments, within_share


def unit(degrees: float) -> np.ndarray:
    return np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])


# ---------------------------------------------------------------------------------------------------------------
# semantic clusters


def test_each_sample_joins_the_first_cluster_whose_first_member_is_close_enough():
    """Angles 0°, 20°, 40°, 90°: cos(0°, 20°) = 0.94 ≥ 0.9 joins; 40° is 0.77 from the first member (0°) though only
    20° from the second: a new cluster (no chaining); 90°: a third."""
    emb = np.stack([unit(0), unit(20), unit(40), unit(90)])
    assert embedding_clusters(emb, 0.9) == [0, 0, 1, 2]
    assert embedding_clusters(emb, 0.7) == [0, 0, 0, 1]
    assert embedding_clusters(emb * np.array([[3.0], [0.5], [1.0], [2.0]]), 0.9) == [0, 0, 1, 2]  # any norm
    # identical texts share a cluster whatever their embeddings
    assert embedding_clusters(np.stack([unit(0), unit(90)]), 0.9, texts=["same", "same"]) == [0, 0]
    with pytest.raises(ValueError, match="cluster threshold"):
        embedding_clusters(emb, 1.5)


def test_semantic_clusters_metric_counts_clusters_per_prompt():
    vectors = {"a": unit(0), "a'": unit(10), "b": unit(90), "c": unit(180)}

    class Lookup:
        def encode(self, texts):
            return np.stack([vectors[t] for t in texts])

    groups = [["a", "a'", "a"], ["a", "b", "c"]]
    out = compute_diversity(groups, metrics=["semantic_clusters"], embedder=Lookup())
    assert out["semantic_clusters"] == pytest.approx((1 + 3) / 2)
    assert "semantic_clusters_across" not in out
    strict = compute_diversity(groups, metrics=["semantic_clusters"], embedder=Lookup(), cluster_threshold=0.999)
    assert strict["semantic_clusters"] == pytest.approx((2 + 3) / 2)  # cos 10° = 0.985 < 0.999


class EntailmentTable:
    """Entailment when (premise, hypothesis) is in `entails`, else neutral."""

    def __init__(self, entails):
        self.entails = set(entails)
        self.calls = 0

    def probabilities(self, premises, hypotheses):
        self.calls += 1
        pairs = zip(premises, hypotheses, strict=True)
        return np.array([[0.8, 0.1, 0.1] if pair in self.entails else [0.2, 0.7, 0.1] for pair in pairs])


def test_nli_clusters_need_entailment_both_ways():
    # "p" and "q" entail each other; "p" entails "r" but "r" does not entail "p" (r is more specific)
    scorer = EntailmentTable({("p", "q"), ("q", "p"), ("p", "r")})
    assert nli_clusters(["p", "q", "r", "p"], scorer) == [0, 0, 1, 0]
    assert scorer.calls == 1  # one batch for every ordered pair of distinct texts
    out = compute_diversity([["p", "q", "r"]], metrics=["semantic_clusters_nli"], nli_scorer=scorer)
    assert out["semantic_clusters_nli"] == 2.0


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("all-MiniLM-L6-v2")


def test_documented_threshold_merges_rewordings(minilm):
    """The module's claims about all-MiniLM-L6-v2 at the default threshold 0.9: a reworded sentence with the same
    content is one cluster; sentences that say different things are two."""
    assert DEFAULT_CLUSTER_THRESHOLD == 0.9
    same = [
        ("Paris is the capital of France.", "The capital of France is Paris."),
        ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ]
    for pair in same:
        assert embedding_clusters(minilm.encode(list(pair)), texts=pair) == [0, 0], pair
    different = ("The sky is blue.", "The ocean is deep.")
    assert embedding_clusters(minilm.encode(list(different)), texts=different) == [0, 1]


# ---------------------------------------------------------------------------------------------------------------
# cross-model homogeneity


def test_cross_and_within_similarity_by_hand():
    """A = {e1, e2}, B = {e1, e1}: cross = mean(1, 1, 0, 0) = 0.5; within A = cos(e1, e2) = 0; within B = 1."""
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    a, b = np.stack([e1, e2]), np.stack([e1, e1])
    assert cross_similarity(a, b) == pytest.approx(0.5)
    assert within_similarity(a) == pytest.approx(0.0)
    assert within_similarity(b) == pytest.approx(1.0)
    assert math.isnan(cross_similarity(a, np.zeros((0, 2))))
    matrix = homogeneity_per_prompt([[a, b], [b, b]])  # two models, two prompts
    assert matrix.shape == (2, 2, 2)
    assert np.allclose(matrix[:, :, 0], [[0.0, 0.5], [0.5, 1.0]])
    assert np.allclose(matrix[:, :, 1], 1.0)
    with pytest.raises(ValueError, match="same prompts"):
        homogeneity_per_prompt([[a, b], [b]])


def test_cross_similarity_equals_the_explicit_double_loop():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    loop = np.mean([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
    assert cross_similarity(a, b) == pytest.approx(loop)


def test_paired_cross_similarity_leaves_out_the_same_index_pairs():
    """A at angles 0°, 90°, 0°; B at 0°, 90°, 90° (cosine = cos of the angle between). Pairs i ≠ j:
    (0,1) 0, (0,2) 0, (1,0) 0, (1,2) 1, (2,0) 1, (2,1) 0 → 2/6. All nine pairs add (0,0) 1, (1,1) 1, (2,2) 0 → 4/9."""
    a, b = np.stack([unit(0), unit(90), unit(0)]), np.stack([unit(0), unit(90), unit(90)])
    assert cross_similarity(a, b, paired=True) == pytest.approx(1 / 3)
    assert cross_similarity(a, b) == pytest.approx(4 / 9)
    assert homogeneity_per_prompt([[a], [b]])[0, 1, 0] == pytest.approx(1 / 3)  # eval's samples are paired
    assert homogeneity_per_prompt([[a], [b]], paired=False)[0, 1, 0] == pytest.approx(4 / 9)
    # sets of different sizes: the pairs (i, i) that exist are left out; one sample each leaves no pair
    # (0,1) 0, (1,0) 0, (2,0) 1, (2,1) 0
    assert cross_similarity(a, b[:2], paired=True) == pytest.approx(1 / 4)
    assert math.isnan(cross_similarity(a[:1], b[:1], paired=True))


def test_identical_paired_models_give_the_within_similarity_exactly():
    """Two identical models drawing the same noise sample the same texts: the cross cell over i ≠ j is the within
    similarity; over all pairs it was within + (1 − within)/K (the bias the paired cell removes)."""
    samples = [np.random.default_rng(seed).normal(size=(6, 5)) for seed in range(3)]
    matrix = homogeneity_per_prompt([samples, samples])
    assert matrix[0, 1] == pytest.approx(matrix[0, 0], abs=1e-12) and matrix[1, 0] == pytest.approx(
        matrix[1, 1], abs=1e-12
    )
    within = matrix[0, 0]
    assert homogeneity_per_prompt([samples, samples], paired=False)[0, 1] == pytest.approx(within + (1 - within) / 6)


def test_shared_noise_biases_every_pair_but_not_the_cells_without_same_index_pairs():
    """3000 prompts × K = 4 samples of unit vectors around one center. A's sample i is center + noise_i; B's is the
    mirror image center + flip(noise_i) (every axis but the center's flipped): B samples A's distribution, yet its
    sample i is tied to A's. Leaving out the pairs (a_i, b_i), the mean cross cell equals the mean within cell (the
    README's claim, in expectation); over all pairs it does not. B drawn with fresh noise agrees either way."""
    rng = np.random.default_rng(0)
    center, flip = 2.0 * np.eye(6)[0], np.array([1.0, -1, -1, -1, -1, -1])
    noise = rng.normal(size=(3000, 4, 6))
    a, mirrored, fresh = center + 0.7 * noise, center + 0.7 * noise * flip, center + 0.7 * rng.normal(size=noise.shape)
    matrix = homogeneity_per_prompt([list(a), list(mirrored), list(fresh)]).mean(axis=2)
    unpaired = homogeneity_per_prompt([list(a), list(mirrored), list(fresh)], paired=False).mean(axis=2)
    within = matrix[0, 0]
    assert matrix[1, 1] == pytest.approx(within) and matrix[2, 2] == pytest.approx(within, abs=0.005)
    assert matrix[0, 1] == pytest.approx(within, abs=0.005) and matrix[0, 2] == pytest.approx(within, abs=0.005)
    assert unpaired[0, 1] < within - 0.05  # a_i and b_i point away from each other more than two independent draws
    assert unpaired[0, 2] == pytest.approx(within, abs=0.005)


def test_homogeneity_reads_same_wider_and_elsewhere():
    """The module's reading, on large samples of known distributions (unit vectors around a center): the same
    distribution gives cross = both withins; a wider one around the same center lies between; another center lies
    below both."""
    rng = np.random.default_rng(0)

    def around(center, spread, n=4000):
        x = center + spread * rng.normal(size=(n, len(center)))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    here, there = np.eye(6)[0] * 2.0, np.eye(6)[1] * 2.0
    a, same, wider, elsewhere = around(here, 0.5), around(here, 0.5), around(here, 1.5), around(there, 0.5)
    assert cross_similarity(a, same) == pytest.approx(within_similarity(a), abs=0.01)
    assert cross_similarity(a, same) == pytest.approx(within_similarity(same), abs=0.01)
    assert within_similarity(wider) + 0.05 < cross_similarity(a, wider) < within_similarity(a) - 0.05
    assert cross_similarity(a, elsewhere) < min(within_similarity(a), within_similarity(elsewhere)) - 0.5


# ---------------------------------------------------------------------------------------------------------------
# within- vs across-prompt spread


def test_within_share_extremes():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert within_prompt_share([np.stack([e1, e1]), np.stack([e2, e2])]) == 0.0  # one answer per prompt
    assert within_prompt_share([np.stack([e1, e2]), np.stack([e1, e2])]) == 1.0  # prompts do not matter
    assert math.isnan(within_prompt_share([np.stack([e1, e1]), np.stack([e1, e1])]))  # no variance at all
    # the same text embedded twice can differ by float noise: still no variance, not a ratio of noise
    noise = np.random.default_rng(1).normal(scale=1e-8, size=(4, 2))
    assert math.isnan(within_prompt_share([np.stack([e1, e1]) + noise[:2], np.stack([e1, e1]) + noise[2:]]))


def test_within_share_is_the_law_of_total_variance():
    """Against numpy's variances: total = N · Σ_d var(all samples), within = Σ_p K_p · Σ_d var(prompt p)."""
    rng = np.random.default_rng(0)
    groups = [rng.normal(loc=rng.normal(size=6), size=(k, 6)) for k in (3, 5, 4, 2)]
    unit_groups = [g / np.linalg.norm(g, axis=1, keepdims=True) for g in groups]
    everything = np.concatenate(unit_groups)
    total = len(everything) * everything.var(axis=0).sum()
    within = sum(len(g) * g.var(axis=0).sum() for g in unit_groups)
    assert within_prompt_share(groups) == pytest.approx(within / total)
    # a bootstrap resample is the same computation over the drawn prompts, repeats included
    drawn = [0, 0, 2, 3]
    again = np.concatenate([unit_groups[i] for i in drawn])
    expected = sum(len(unit_groups[i]) * unit_groups[i].var(axis=0).sum() for i in drawn) / (
        len(again) * again.var(axis=0).sum()
    )
    assert within_share(prompt_moments(groups), np.array(drawn)) == pytest.approx(expected)


def _spread_groups(seed: int, prompts: int = 6) -> list[np.ndarray]:
    """Six prompts of 4 unit-ish embeddings each: one prompt far more spread than the others (a skewed share)."""
    rng = np.random.default_rng(seed)
    groups = []
    for p in range(prompts):
        centre = rng.normal(size=8)
        scale = 1.5 if p == 0 else 0.2
        groups.append(centre + scale * rng.normal(size=(4, 8)))
    return groups


def test_the_within_share_ci_is_scipys_bca_over_prompts():
    """The CI of the within-prompt share (a ratio of sums over prompts) is `scipy.stats.bootstrap`'s BCa interval of
    the share recomputed on resampled prompts — recomputed here from the definition (total variance of the
    unit-normalised embeddings), not from divalign's moments — and it holds the estimate inside."""
    from scipy import stats

    from divalign.evaluation.semantic_views import spread_view

    groups = _spread_groups(3)
    unit = [g / np.linalg.norm(g, axis=1, keepdims=True) for g in groups]

    def share(index: np.ndarray) -> float:
        chosen = [unit[i] for i in index]
        everything = np.concatenate(chosen)
        total = ((everything - everything.mean(axis=0)) ** 2).sum()
        return sum(((g - g.mean(axis=0)) ** 2).sum() for g in chosen) / total

    view = spread_view(groups, n_bootstrap=999, seed=7)
    expected = stats.bootstrap(
        (np.arange(6),), share, vectorized=False, n_resamples=999, method="BCa", rng=np.random.default_rng(7)
    ).confidence_interval
    assert view["within_share"] == pytest.approx(share(np.arange(6)))
    assert (view["ci_low"], view["ci_high"]) == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert view["ci_low"] < view["within_share"] < view["ci_high"]
