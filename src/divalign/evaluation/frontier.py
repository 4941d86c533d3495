"""The quality–diversity frontier: each model sampled at several temperatures, quality against diversity.

Diversity can be bought with temperature, so "model B is more diverse than model A" says little unless B also keeps
more quality at the same diversity. A model's (diversity, quality) points across temperatures trace a curve; its
frontier is the Pareto-efficient part of it — the points no other temperature beats on both diversity and quality
(past some temperature, sampling noise lowers quality and diversity alike, and those points are dominated). Two
models are compared at matched diversity: each frontier is interpolated linearly in the diversity metric between its
efficient points, and the quality difference is read at evenly spaced diversity levels inside the range both
frontiers cover (never extrapolated). The 95 % CIs come from a percentile bootstrap over prompts, resampled jointly
for both models and every temperature (the prompts are paired), so each resample re-draws both frontiers. It is not
`scipy.stats.bootstrap`: a resample whose frontiers do not reach a level has no value there and is left out of that
level's interval, where scipy's interval would turn NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..markdown_table import markdown_table


@dataclass
class FrontierCurve:
    """One model's per-prompt quality and diversity at each temperature: arrays of shape (temperatures, prompts)."""

    temperatures: list[float]
    quality: np.ndarray
    diversity: np.ndarray

    def points(self, prompts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(diversity, quality) per temperature: means over `prompts` (all by default), NaN-skipping."""
        idx = slice(None) if prompts is None else prompts
        return _nanmean(self.diversity[:, idx]), _nanmean(self.quality[:, idx])


@dataclass
class MatchedDifference:
    """Quality of a model minus the reference's at matched diversity levels (empty when the frontiers don't overlap)."""

    levels: list[float]
    difference: list[float]
    ci_low: list[float]
    ci_high: list[float]
    mean: float = math.nan  # over the levels: the average vertical gap across the shared diversity range
    mean_ci: tuple[float, float] = (math.nan, math.nan)


def _nanmean(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    counts = (~np.isnan(values)).sum(axis=-1)
    sums = np.nansum(values, axis=-1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def efficient(diversity: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto-efficient (diversity, quality) points, by increasing diversity (and so decreasing quality): those
    that no other point matches or beats on both, with one strictly better."""
    d, q = np.asarray(diversity, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    keep = ~(np.isnan(d) | np.isnan(q))
    d, q = d[keep], q[keep]
    dominated = [bool(np.any((d >= di) & (q >= qi) & ((d > di) | (q > qi)))) for di, qi in zip(d, q, strict=True)]
    d, q = d[~np.array(dominated, dtype=bool)], q[~np.array(dominated, dtype=bool)]
    order = np.lexsort((-q, d))
    return d[order], q[order]


def quality_at(diversity: Sequence[float], quality: Sequence[float], levels: Sequence[float]) -> np.ndarray:
    """Quality of one frontier at `levels` of diversity: linear between its efficient points, NaN outside the
    diversity range they cover."""
    d, q = efficient(diversity, quality)
    if not d.size:
        return np.full(len(levels), np.nan)
    return np.interp(np.asarray(levels, dtype=np.float64), d, q, left=np.nan, right=np.nan)


def shared_levels(first: Sequence[float], second: Sequence[float], count: int = 5) -> np.ndarray:
    """`count` evenly spaced diversity levels spanning the range both frontiers cover (empty when disjoint); the
    arguments are the diversities of each frontier's efficient points."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not a.size or not b.size:
        return np.zeros(0)
    low, high = max(a.min(), b.min()), min(a.max(), b.max())
    if low > high:
        return np.zeros(0)
    return np.linspace(low, high, count) if high > low else np.array([low])


def matched_difference(
    reference: FrontierCurve, model: FrontierCurve, count: int = 5, n_bootstrap: int = 1000, seed: int = 0
) -> MatchedDifference:
    """`model`'s quality minus `reference`'s at `count` shared diversity levels, with bootstrap CIs over prompts."""
    ref_d, ref_q = reference.points()
    mod_d, mod_q = model.points()
    levels = shared_levels(efficient(ref_d, ref_q)[0], efficient(mod_d, mod_q)[0], count)
    if not levels.size:
        return MatchedDifference([], [], [], [])
    point = quality_at(mod_d, mod_q, levels) - quality_at(ref_d, ref_q, levels)
    draws = np.full((n_bootstrap, levels.size), np.nan)
    rng = np.random.default_rng(seed)
    num_prompts = reference.quality.shape[1]
    for b in range(n_bootstrap):
        prompts = rng.integers(0, num_prompts, size=num_prompts)
        (rd, rq), (md, mq) = reference.points(prompts), model.points(prompts)
        draws[b] = quality_at(md, mq, levels) - quality_at(rd, rq, levels)
    low, high = _percentiles(draws)
    means = _nanmean(draws) if n_bootstrap else np.zeros(0)
    mean_low, mean_high = _percentiles(means[:, None]) if n_bootstrap else ([math.nan], [math.nan])
    return MatchedDifference(
        levels=levels.tolist(),
        difference=point.tolist(),
        ci_low=low,
        ci_high=high,
        mean=float(np.mean(point)),
        mean_ci=(float(mean_low[0]), float(mean_high[0])),
    )


def _percentiles(draws: np.ndarray) -> tuple[list[float], list[float]]:
    """2.5th and 97.5th percentiles per column over the resamples where the value is defined (NaN when none is)."""
    low, high = [], []
    for column in np.asarray(draws, dtype=np.float64).T:
        column = column[~np.isnan(column)]
        lo, hi = np.percentile(column, [2.5, 97.5]) if column.size else (math.nan, math.nan)
        low.append(float(lo))
        high.append(float(hi))
    return low, high


def difference_table(
    reference: str, comparisons: Mapping[str, MatchedDifference], diversity_name: str, quality_name: str
) -> list[str]:
    """Markdown lines: per model, the quality difference vs `reference` [95 % CI] at each matched diversity level and
    averaged over the shared range."""

    def cell(value: float, low: float, high: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"

    rows = []
    for name, comparison in comparisons.items():
        if not comparison.levels:
            rows.append([name, f"no diversity range shared with {reference}", "n/a"])
            continue
        for level, d, low, high in zip(
            comparison.levels, comparison.difference, comparison.ci_low, comparison.ci_high, strict=True
        ):
            rows.append([name, f"{level:.3f}", cell(d, low, high)])
        span = f"mean over {comparison.levels[0]:.3f}–{comparison.levels[-1]:.3f}"
        rows.append([name, span, cell(comparison.mean, *comparison.mean_ci)])
    return markdown_table(["model", diversity_name, f"{quality_name} − {reference}'s [95 % CI]"], rows)


def plot_frontiers(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | Path,
    diversity_name: str,
    quality_name: str,
    title: str | None = None,
) -> Path:
    """One frontier per model: `curves[name] = (temperatures, diversity, quality)`. Every point is drawn, labelled
    by its temperature and joined in temperature order (thin); the efficient frontier the comparison uses is the
    thick line."""
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    for name, (temperatures, diversity, quality) in curves.items():
        order = np.argsort(np.asarray(temperatures, dtype=np.float64))
        x, y = np.asarray(diversity, dtype=np.float64)[order], np.asarray(quality, dtype=np.float64)[order]
        (line,) = ax.plot(x, y, marker="o", markersize=4, linewidth=0.8, alpha=0.6)
        ax.plot(*efficient(x, y), linewidth=2.2, color=line.get_color(), label=name)
        for t, xi, yi in zip(np.asarray(temperatures)[order], x, y, strict=True):
            ax.annotate(
                f"{t:g}", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=7, color=line.get_color()
            )
    ax.set_xlabel(f"{diversity_name} (diversity)")
    ax.set_ylabel(f"{quality_name} (quality)")
    ax.set_title(title or "Quality–diversity frontier (labels: sampling temperature)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
