"""Genuine vs surface diversity across a lineage: cross-model homogeneity and the within-prompt share of spread.

Both read the sentence embeddings of every model's samples (the texts as the metric profile prepares them) and are
computed by `divalign eval` whenever an embedder is loaded (any embedding metric among `--metrics`):

- `homogeneity`: for every pair of models, the mean over prompts of the mean cosine between A's and B's samples of
  the same prompt — the pairs (a_i, b_j) with i ≠ j, since sample i of every model draws the same noise — each
  model's within-model similarity on the diagonal (`divalign.diversity.homogeneity`), with bootstrap CIs over prompts;
- `spread`: per model, the share of its embedding variance that lies within prompts
  (`divalign.diversity.spread`), with a bootstrap CI over prompts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..diversity.aggregate import bootstrap_ci
from ..diversity.bootstrap import bootstrap_interval
from ..diversity.embedding import Embedder
from ..diversity.homogeneity import homogeneity_per_prompt
from ..diversity.profile import MetricProfile
from ..diversity.spread import prompt_moments, within_share


def embed_groups(texts: list[list[str]], embedder: Embedder, profile: MetricProfile) -> list[np.ndarray]:
    """Per prompt, the (K, d) embeddings of its samples as `profile` prepares them; one encode call."""
    flat = [profile.prepare_text(t) for group in texts for t in group]
    emb = np.asarray(embedder.encode(flat)) if flat else np.zeros((0, 0))
    offsets = np.cumsum([0] + [len(g) for g in texts])
    return [emb[offsets[i] : offsets[i + 1]] for i in range(len(texts))]


def homogeneity_view(embeddings: dict[str, list[np.ndarray]], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The lineage's similarity matrix: mean over prompts [bootstrap 95 % CI over prompts] of every cell, and the
    per-prompt values (`per_prompt[a][b]`)."""
    names = list(embeddings)
    per_prompt = homogeneity_per_prompt([embeddings[name] for name in names])
    mean, low, high = (np.full((len(names), len(names)), math.nan) for _ in range(3))
    for a in range(len(names)):
        for b in range(len(names)):
            values = per_prompt[a, b]
            finite = values[~np.isnan(values)]
            mean[a, b] = finite.mean() if finite.size else math.nan
            low[a, b], high[a, b] = bootstrap_ci(values, n_resamples=n_bootstrap, seed=seed)
    return {
        "models": names,
        "mean": mean.tolist(),
        "ci_low": low.tolist(),
        "ci_high": high.tolist(),
        "per_prompt": per_prompt.tolist(),
    }


def spread_view(groups: list[np.ndarray], n_bootstrap: int, seed: int, confidence: float = 0.95) -> dict[str, float]:
    """Within-prompt share of one model's embedding variance, with a BCa bootstrap CI over prompts (the prompts
    resampled with replacement, the share recomputed from their moments; a ratio, so skewed: the percentile interval
    can put the estimate on its own bound)."""
    moments = prompt_moments(groups)
    share = within_share(moments)
    count = len(moments.counts)
    if not count:
        return {"within_share": math.nan, "ci_low": math.nan, "ci_high": math.nan, "num_prompts": 0}
    low = high = math.nan
    if count > 1 and math.isfinite(share):
        found = bootstrap_interval(
            (np.arange(count),),
            lambda prompts: within_share(moments, prompts),
            n_resamples=n_bootstrap,
            seed=seed,
            confidence=confidence,
            vectorized=False,
        )
        low, high = found.low, found.high
    return {"within_share": share, "ci_low": low, "ci_high": high, "num_prompts": count}


def semantic_views(
    texts: dict[str, list[list[str]]], embedder: Embedder, profile: MetricProfile, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """`homogeneity` (the matrix over the models in lineage order) and `spread` (one entry per model)."""
    embeddings = {name: embed_groups(groups, embedder, profile) for name, groups in texts.items()}
    return {
        "homogeneity": homogeneity_view(embeddings, n_bootstrap, seed),
        "spread": {name: spread_view(groups, n_bootstrap, seed) for name, groups in embeddings.items()},
    }


def plot_homogeneity(view: dict[str, Any], path: Path) -> Path:
    """homogeneity.png: the similarity matrix as a heat map, each cell annotated with its mean."""
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    names, matrix = view["models"], np.asarray(view["mean"], dtype=np.float64)
    size = 1.6 + 0.9 * len(names)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis", vmin=np.nanmin(matrix), vmax=np.nanmax(matrix))
    fig.colorbar(image, ax=ax, label="mean cosine similarity")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("samples of model B")
    ax.set_ylabel("samples of model A")
    ax.set_title("Same-prompt similarity (diagonal: within a model)")
    middle = (np.nanmin(matrix) + np.nanmax(matrix)) / 2
    for (a, b), value in np.ndenumerate(matrix):
        ax.text(b, a, f"{value:.2f}", ha="center", va="center", color="black" if value > middle else "white")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
