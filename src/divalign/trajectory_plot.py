"""`divalign plot --trajectory METRIC`: a run's path in the quality–diversity plane, one point per diversity
evaluation (``diversity/quality/mean`` against ``diversity/<METRIC>``, both logged by the training callback when its
recipe block has a ``quality``), coloured by step: the frontier over training time. Where the path goes left at the
same height, diversity was lost without a gain in quality; up and left, it was spent on quality.

A pipeline's ``output_root`` draws its stages joined, end to end on the pipeline's step axis, each stage's first
point named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .run_history import RunCurves

QUALITY_KEY = "diversity/quality/mean"


@dataclass(frozen=True)
class TrajectoryPoint:
    """One evaluation of a run: its step (pipelines: on the joined axis), diversity, quality, and the stage it
    starts, if it is a pipeline stage's first point."""

    step: int
    diversity: float
    quality: float
    stage: str | None = None


def diversity_key(metric: str) -> str:
    """The logged key of ``metric``: ``ead`` is ``diversity/ead``; a full key stays as it is."""
    return metric if metric.startswith("diversity/") else f"diversity/{metric}"


def trajectory(run: RunCurves, metric: str) -> list[TrajectoryPoint]:
    """The evaluations of ``run`` that logged both the quality and ``metric`` (a name or a key), in step order,
    stages joined."""
    key = diversity_key(metric)
    points = []
    for index, segment in enumerate(run.segments):
        quality, diversity = dict(segment.get(QUALITY_KEY, [])), dict(segment.get(key, []))
        stage = run.stage_starts[index][1] if run.stage_starts else None
        for position, step in enumerate(sorted(quality.keys() & diversity.keys())):
            points.append(TrajectoryPoint(step, diversity[step], quality[step], stage if position == 0 else None))
    return points


def _check(points: list[TrajectoryPoint], run: RunCurves, label: str, key: str) -> None:
    if points:
        return
    if QUALITY_KEY not in run.keys:
        raise ValueError(
            f"run {label} logged no {QUALITY_KEY}: give its recipe's diversity block a `quality:` (a reward or "
            "verifier of the rewards registry, or a reward model path) to draw its trajectory"
        )
    logged = sorted(k for k in run.keys if k.startswith("diversity/") and not k.endswith(("_p10", "_p90", "_across")))
    raise ValueError(f"run {label} logged no {key} next to {QUALITY_KEY}; its diversity keys: {logged}")


def draw_trajectories(runs: list[RunCurves], labels: list[str], metric: str) -> Any:
    """One axes: per run a line in its colour (``C<i>``, as in the curve figure) through its evaluations, the points
    coloured by step on one shared scale; the first point and each pipeline stage's first point named."""
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    key = diversity_key(metric)
    paths = [trajectory(run, key) for run in runs]
    for points, run, label in zip(paths, runs, labels, strict=True):
        _check(points, run, label, key)
    steps = [p.step for points in paths for p in points]
    norm = Normalize(vmin=min(steps), vmax=max(steps) if max(steps) > min(steps) else min(steps) + 1)
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.subplots()
    scatter = None
    for index, (points, label) in enumerate(zip(paths, labels, strict=True)):
        color = f"C{index % 10}"
        xs, ys = [p.diversity for p in points], [p.quality for p in points]
        ax.plot(xs, ys, color=color, linewidth=1.2, alpha=0.7, label=label, zorder=1)
        scatter = ax.scatter(xs, ys, c=[p.step for p in points], cmap="viridis", norm=norm, s=36, zorder=2,
                             edgecolors=color, linewidths=1.0)  # fmt: skip
        for point in points:
            if point is points[0] or point.stage is not None:
                name = point.stage if point.stage is not None else f"step {point.step}"
                ax.annotate(name, (point.diversity, point.quality), textcoords="offset points", xytext=(4, 4),
                            fontsize="x-small", color=color)  # fmt: skip
    fig.colorbar(scatter, ax=ax, label="step (pipelines: stages end to end)")
    ax.set_xlabel(f"{key} (more diverse →)")
    ax.set_ylabel(QUALITY_KEY)
    ax.set_title("quality–diversity trajectory over training")
    ax.legend(fontsize="small")
    return fig
