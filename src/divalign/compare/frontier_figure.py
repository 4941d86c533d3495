"""The calibrated comparison's figure: each model's fixed-grid (diversity, quality) points, its efficient frontier,
and its matched points. A frontier of one efficient point is drawn as a star and named so in the legend: one
temperature beats or matches all the others on both axes, so there is no curve to follow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .statistics import Point, frontier, single_point_label


def plot_calibrated_frontiers(
    points: Mapping[str, Sequence[Point]],
    path: Path,
    diversity_name: str,
    quality_name: str,
    direction: int = 1,
    matched: Mapping[str, Sequence[Point]] | None = None,
    title: str | None = None,
) -> Path:
    """One figure: per model its grid points (labelled by temperature, thin line in temperature order), its efficient
    ones (thick line, or a star when it is a single point) and its `matched` points (hollow squares)."""
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    fig = Figure(figsize=(7, 5.2))
    ax = fig.subplots()
    for name, pts in points.items():
        pts = sorted(pts, key=lambda p: p.temperature)
        x, y = np.array([p.diversity for p in pts]), np.array([p.quality for p in pts])
        (line,) = ax.plot(x, y, marker="o", markersize=4, linewidth=0.8, alpha=0.6)
        color = line.get_color()
        front: dict[str, Any] = frontier(pts, direction)
        best = [p for p in pts if p.temperature in front["efficient"]]
        best.sort(key=lambda p: p.diversity * direction)
        if front["single_point"]:
            label = f"{name} (frontier: one point, {single_point_label([p.temperature for p in best])})"
            ax.plot([best[0].diversity], [best[0].quality], marker="*", markersize=16, color=color, label=label)
        else:
            ax.plot([p.diversity for p in best], [p.quality for p in best], linewidth=2.2, color=color, label=name)
        for p in pts:
            ax.annotate(
                f"{p.temperature:g}",
                (p.diversity, p.quality),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=7,
                color=color,
            )
        for p in (matched or {}).get(name, []):
            ax.plot([p.diversity], [p.quality], marker="s", markersize=8, markerfacecolor="none", color=color)
    ax.set_xlabel(f"{diversity_name} (diversity{'' if direction > 0 else ', lower = more diverse'})")
    ax.set_ylabel(f"{quality_name} (quality)")
    ax.set_title(
        title or "Frontiers on the evaluation prompts (labels: temperature; squares: matched points)",
        fontsize="medium",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
