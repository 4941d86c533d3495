"""`divalign plot`: training curves of `diversity/*` metrics and the loss, several runs side by side; or, with
`--trajectory METRIC`, each run's path in the quality–diversity plane (:mod:`divalign.trajectory_plot`).

Reads the Trainer's `trainer_state.json` (its `log_history`, :mod:`divalign.run_history`), from the run directory or
its newest checkpoint. The `loss` of runs with different objectives (TOFU's focal loss, CE's NLL, a DPO loss: the
`trainer:` of each run's recipe) is drawn in one panel per objective, never on one axis; the NLL that the TOFU and
GEM trainers log beside their loss gets a panel of its own. A pipeline's `output_root` (`divalign pipeline` records its stages there) is drawn end to end:
each stage's curves shifted by the steps of the stages before it (the `pipeline/step` its W&B runs log), with the
stage boundaries marked. Every run keeps one colour in every panel.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
from pathlib import Path
from typing import Any

from .run_history import Curves, RunCurves, find_trainer_state, load_curves, load_run, run_labels
from .subcommand import split_names

__all__ = [
    "find_trainer_state",
    "image_path",
    "load_curves",
    "load_run",
    "plot_quality_diversity",
    "plot_runs",
    "select_keys",
]

DEFAULT_OUT = "diversity_curves.png"
DEFAULT_TRAJECTORY_OUT = "quality_diversity.png"
_BAND = ("_p10", "_p90")


def _is_loss(key: str) -> bool:
    return key == "loss" or key.startswith("loss (")  # "loss (tofu)": one objective's loss (`split_losses`)


def _drawn_by_default(key: str) -> bool:
    # "diversity/x" from training, "eval_diversity/x" if a callback logs during evaluation.
    return _is_loss(key) or key == "nll" or key.startswith("diversity/") or "_diversity/" in key


def _matches(key: str, pattern: str) -> bool:
    # `sbert` finds `diversity/sbert`; shell-style patterns (`diversity/distinct_*`) also work; `loss` every
    # objective's loss panel.
    if _is_loss(key):
        key = "loss"
    return fnmatch.fnmatch(key, pattern) or fnmatch.fnmatch(key.split("/")[-1], pattern)


def split_losses(runs: list[RunCurves]) -> list[RunCurves]:
    """The runs with each segment's `loss` renamed `loss (<objective>)` when the segments logging a loss trained
    more than one objective, so that each objective's loss gets its own panel (a segment of unknown objective keeps
    `loss`)."""
    objectives = {
        objective
        for run in runs
        for segment, objective in zip(run.segments, _objectives(run), strict=True)
        if "loss" in segment
    }
    if len(objectives) < 2:
        return runs
    renamed = []
    for run in runs:
        segments = [
            {(f"loss ({objective})" if key == "loss" and objective else key): points for key, points in seg.items()}
            for seg, objective in zip(run.segments, _objectives(run), strict=True)
        ]
        renamed.append(RunCurves(segments, run.stage_starts, run.objectives))
    return renamed


def _objectives(run: RunCurves) -> list[str | None]:
    return run.objectives or [None] * len(run.segments)


def _present(all_curves: list[Curves] | list[RunCurves]) -> set[str]:
    return {k for c in all_curves for k in (c.keys if isinstance(c, RunCurves) else c)}


def select_keys(all_curves: list[Curves] | list[RunCurves], patterns: list[str] | None) -> list[str]:
    """Keys to plot: the loss panels first, then `nll`, then the rest sorted. Without `patterns`, the loss, `nll` and
    the `diversity/*` keys; with them, every logged key (`grad_norm`, `nll`, `learning_rate`...) that a pattern names,
    by full key or by the part after the last `/`.

    `<key>_p10` / `<key>_p90` are drawn as a band around `<key>` rather than as subplots of their own.
    """
    present = _present(all_curves)
    keys = [k for k in present if not (k.endswith(_BAND) and k[:-4] in present)]
    if patterns:
        keys = [k for k in keys if any(_matches(k, p) for p in patterns)]
    else:
        keys = [k for k in keys if _drawn_by_default(k)]
    return sorted(keys, key=lambda k: (not _is_loss(k), k != "nll", k))


def missing_metrics(runs: list[RunCurves], labels: list[str], patterns: list[str]) -> list[str]:
    """One line per requested pattern that some run did not log, naming the runs (and whether any run did)."""
    notes = []
    for pattern in patterns:
        lacking = [
            label for label, run in zip(labels, runs, strict=True) if not any(_matches(k, pattern) for k in run.keys)
        ]
        if len(lacking) == len(runs):
            notes.append(f"{pattern}: logged by none of the runs; nothing drawn for it")
        elif lacking:
            notes.append(f"{pattern}: not logged by {', '.join(lacking)}; drawn for the other runs only")
    return notes


def image_path(out: str | Path, figure: Any) -> Path:
    """The file the figure is written to: ``out`` as given when its suffix is a format matplotlib writes, ``out``
    plus ``.png`` when it has no suffix (what matplotlib itself would write, so the printed path is the file)."""
    out = Path(out)
    if not out.suffix:
        return out.with_name(out.name + ".png")
    formats = figure.canvas.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:
        raise ValueError(
            f"--out {out}: matplotlib writes no {out.suffix!r} images; end it in .png (or "
            f"{', '.join('.' + f for f in sorted(formats) if f != 'png')})"
        )
    return out


def save_figure(figure: Any, out: str | Path) -> Path:
    """Write ``figure`` to :func:`image_path` of ``out`` (folders created); returns that path."""
    path = image_path(out, figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _draw(ax: Any, curves: Curves, key: str, label: str | None, color: str) -> None:
    """One curve (and its p10-p90 band)."""
    steps, values = zip(*curves[key], strict=True)
    ax.plot(steps, values, marker=".", label=label, color=color)
    low, high = dict(curves.get(key + "_p10", [])), dict(curves.get(key + "_p90", []))
    band = [s for s in steps if s in low and s in high]
    if band:  # spread over prompts, when the callback logged it
        ax.fill_between(band, [low[s] for s in band], [high[s] for s in band], color=color, alpha=0.15)


def _draw_run(ax: Any, run: RunCurves, key: str, label: str, color: str) -> None:
    """A run's curve of ``key``, segment by segment in its colour; a pipeline's stage starts as dotted lines."""
    drawn = False
    for segment in run.segments:
        if key in segment:
            _draw(ax, segment, key, None if drawn else label, color)
            drawn = True
    for start, name in run.stage_starts[1:] if drawn else []:
        ax.axvline(start, color=color, linestyle=":", linewidth=1)
        ax.annotate(name, (start, 1), xycoords=("data", "axes fraction"), fontsize="x-small", va="top", color=color)


def draw_curves(runs: list[RunCurves], labels: list[str], keys: list[str]) -> Any:
    """A figure with one subplot per key and one line per run, run i in colour ``C<i>`` in every subplot."""
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(5 * ncols, 3.5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{index % 10}" for index in range(len(runs))]
    for ax, key in zip(axes, keys, strict=False):
        for label, run, color in zip(labels, runs, colors, strict=True):
            _draw_run(ax, run, key, label, color)
        ax.set_title(key)
        ax.set_xlabel("step (pipelines: stages end to end)" if any(r.stage_starts for r in runs) else "step")
        ax.legend(fontsize="small")
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    return fig


def plot_runs(run_dirs: list[str | Path], out: str | Path, metrics: list[str] | None = None) -> Path:
    """Draw one subplot per logged key, one line per run (legend = run directory name); returns the image's path.
    Requested `metrics` that a run did not log are named on stderr; none logged at all is an error."""
    if not run_dirs:
        raise ValueError("plot needs at least one run directory")
    runs = split_losses([load_run(d) for d in run_dirs])
    labels = run_labels(run_dirs)
    keys = select_keys(runs, metrics)
    if not keys:
        wanted = f" matching {metrics}" if metrics else ""
        raise ValueError(
            f"No `loss` or `diversity/*` values{wanted} in the log history of {[str(d) for d in run_dirs]}; "
            f"logged keys: {sorted(_present(runs))}"
        )
    for note in missing_metrics(runs, labels, metrics or []):
        print(f"divalign plot: {note}", file=sys.stderr)
    return save_figure(draw_curves(runs, labels, keys), out)


def plot_quality_diversity(run_dirs: list[str | Path], out: str | Path, metric: str) -> Path:
    """Draw the quality–diversity trajectories of ``run_dirs`` (runs or pipelines, stages joined) against the
    diversity ``metric`` into ``out`` (:mod:`divalign.trajectory_plot`); returns the image's path."""
    from .trajectory_plot import draw_trajectories

    if not run_dirs:
        raise ValueError("plot needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    return save_figure(draw_trajectories(runs, run_labels(run_dirs), metric), out)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `divalign plot`."""
    parser = subparsers.add_parser(
        "plot",
        help="plot diversity/* and loss curves of training runs, or their quality–diversity trajectories",
        description="Plot `diversity/*` keys, `loss` and `nll` (or any logged key named with --metrics) against step "
        "from each run's trainer_state.json; a pipeline's output_root draws its stages end to end. Runs of different "
        "objectives (the trainer: of their recipes) get one loss panel per objective, and the nll the TOFU and GEM "
        "trainers log a panel of its own. With --trajectory, draw each run's path in the quality–diversity plane "
        "instead.",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="Trainer output directories, or a pipeline's output_root (its stages end to end)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"output image (default: {DEFAULT_OUT}, with --trajectory {DEFAULT_TRAJECTORY_OUT}); a path without a "
        "suffix gets .png; .pdf, .svg and the other formats matplotlib writes work too",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="keys or patterns to plot (e.g. loss sbert 'distinct_*' grad_norm nll); default: loss, nll and every "
        "diversity/* key. A name a run did not log is reported",
    )
    parser.add_argument(
        "--trajectory",
        metavar="METRIC",
        default=None,
        help="draw diversity/quality/mean against this diversity metric (e.g. ead, or a key such as "
        "diversity/correct_only/ead), one point per evaluation coloured by step; needs runs whose diversity "
        "block has a quality",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign plot` from parsed arguments."""
    metrics = split_names(args.metrics)
    if args.trajectory is not None:
        if metrics is not None:
            raise ValueError("--metrics draws curves and --trajectory the quality–diversity plane: pass one of them")
        print(plot_quality_diversity(args.run_dirs, args.out or DEFAULT_TRAJECTORY_OUT, args.trajectory))
        return 0
    print(plot_runs(args.run_dirs, args.out or DEFAULT_OUT, metrics))
    return 0
