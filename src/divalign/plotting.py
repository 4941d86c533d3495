"""`divalign plot`: training curves of `diversity/*` metrics and the loss, several runs side by side.

Reads the Trainer's `trainer_state.json` (its `log_history`), from the run directory or its newest checkpoint. A
pipeline's `output_root` (`divalign pipeline` records its stages there) is drawn end to end: each stage's curves
shifted by the steps of the stages before it (the `pipeline/step` its W&B runs log), with the stage boundaries marked.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .launch.checkpoints import TRAINER_STATE, checkpoints, newest_complete

Curves = dict[str, list[tuple[int, float]]]
PIPELINE_MANIFEST = Path(".divalign_state") / "pipeline.json"  # written by divalign.pipeline.runner.write_manifest


@dataclass
class RunCurves:
    """What one RUN_DIR argument draws: one segment of curves per training run (a pipeline: one per stage, steps
    already shifted) and, for a pipeline, where each stage starts."""

    segments: list[Curves]
    stage_starts: list[tuple[int, str]] = field(default_factory=list)

    @property
    def keys(self) -> set[str]:
        return {key for segment in self.segments for key in segment}


def find_trainer_state(run_dir: str | Path) -> Path:
    """`RUN_DIR/trainer_state.json`, else the one in the newest complete `checkpoint-*` directory (by step; the
    run lifecycle's own lookup, :func:`divalign.launch.checkpoints.newest_complete`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory not found: {run_dir}")
    top = run_dir / TRAINER_STATE
    if top.is_file():
        return top
    newest = newest_complete(run_dir)
    if newest is not None:
        return newest / TRAINER_STATE
    raise FileNotFoundError(
        f"No trainer_state.json in {run_dir} or in any of its checkpoint-* directories "
        f"({len(checkpoints(run_dir))} found); expected the output_dir of a transformers/TRL Trainer run"
    )


def _is_curve_key(key: str) -> bool:
    # "diversity/x" from training, "eval_diversity/x" if a callback logs during evaluation.
    return key == "loss" or key.startswith("diversity/") or "_diversity/" in key


def load_curves(run_dir: str | Path) -> Curves:
    """Map each `diversity/*` key and `loss` in the run's log history to its (step, value) points."""
    path = find_trainer_state(run_dir)
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    curves: Curves = {}
    for entry in history:
        step = entry.get("step")
        for key, value in entry.items():
            if step is None or not _is_curve_key(key) or not isinstance(value, int | float):
                continue
            if not math.isnan(float(value)):
                curves.setdefault(key, []).append((int(step), float(value)))
    return curves


def _trained_steps(run_dir: Path) -> int:
    state = json.loads(find_trainer_state(run_dir).read_text(encoding="utf-8"))
    return int(state.get("global_step") or 0)


def load_pipeline_curves(output_root: str | Path) -> RunCurves:
    """The stages of the pipeline whose ``output_root`` this is, end to end: a stage's step s is drawn at s plus the
    steps of the stages before it; stages not trained yet are left out."""
    manifest = Path(output_root) / PIPELINE_MANIFEST
    try:
        stages = json.loads(manifest.read_text(encoding="utf-8"))["stages"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{manifest} is not a pipeline manifest ({err})") from err
    run = RunCurves(segments=[])
    offset = 0
    for stage in stages:
        directory = Path(stage["output_dir"])
        try:
            curves = load_curves(directory)
        except FileNotFoundError:
            break  # this stage and the later ones have not trained yet
        run.segments.append({key: [(offset + step, value) for step, value in points] for key, points in curves.items()})
        run.stage_starts.append((offset, stage["name"]))
        offset += _trained_steps(directory)
    if not run.segments:
        raise FileNotFoundError(f"No stage of the pipeline in {output_root} has a trainer_state.json yet")
    return run


def load_run(run_dir: str | Path) -> RunCurves:
    """A training run's curves, or a pipeline's stages end to end when ``run_dir`` is its ``output_root``."""
    if (Path(run_dir) / PIPELINE_MANIFEST).is_file():
        return load_pipeline_curves(run_dir)
    return RunCurves(segments=[load_curves(run_dir)])


_BAND = ("_p10", "_p90")


def select_keys(all_curves: list[Curves] | list[RunCurves], patterns: list[str] | None) -> list[str]:
    """Keys to plot: loss first, then the rest sorted; `patterns` filter by full key or by the part after `/`.

    `<key>_p10` / `<key>_p90` are drawn as a band around `<key>` rather than as subplots of their own.
    """
    present = {k for c in all_curves for k in (c.keys if isinstance(c, RunCurves) else c)}
    keys = sorted((k for k in present if not (k.endswith(_BAND) and k[:-4] in present)), key=lambda k: (k != "loss", k))
    if patterns:
        # `sbert` should find `diversity/sbert`; shell-style patterns (`diversity/distinct_*`) also work.
        keys = [k for k in keys if any(fnmatch.fnmatch(k, p) or fnmatch.fnmatch(k.split("/")[-1], p) for p in patterns)]
    return keys


def _run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Run directory names, or the paths as given when two runs share a name (runs/a/out vs runs/b/out)."""
    names = [Path(d).resolve().name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _draw(ax: Any, curves: Curves, key: str, label: str | None, color: Any = None) -> Any:
    """One curve (and its p10-p90 band); returns its color."""
    steps, values = zip(*curves[key], strict=True)
    (line,) = ax.plot(steps, values, marker=".", label=label, color=color)
    low, high = dict(curves.get(key + "_p10", [])), dict(curves.get(key + "_p90", []))
    band = [s for s in steps if s in low and s in high]
    if band:  # spread over prompts, when the callback logged it
        ax.fill_between(band, [low[s] for s in band], [high[s] for s in band], color=line.get_color(), alpha=0.15)
    return line.get_color()


def _draw_run(ax: Any, run: RunCurves, key: str, label: str) -> None:
    """A run's curve of ``key``, segment by segment in one color; a pipeline's stage starts as dotted lines."""
    color = None
    for segment in run.segments:
        if key in segment:
            color = _draw(ax, segment, key, label if color is None else None, color)
    for start, name in run.stage_starts[1:] if color is not None else []:
        ax.axvline(start, color=color, linestyle=":", linewidth=1)
        ax.annotate(name, (start, 1), xycoords=("data", "axes fraction"), fontsize="x-small", va="top", color=color)


def plot_runs(run_dirs: list[str | Path], out: str | Path, metrics: list[str] | None = None) -> Path:
    """Draw one subplot per logged key, one line per run (legend = run directory name); returns the PNG path."""
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    if not run_dirs:
        raise ValueError("plot needs at least one run directory")
    all_curves = [load_run(d) for d in run_dirs]
    keys = select_keys(all_curves, metrics)
    if not keys:
        wanted = f" matching {metrics}" if metrics else ""
        raise ValueError(
            f"No `loss` or `diversity/*` values{wanted} in the log history of {[str(d) for d in run_dirs]}"
        )
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(5 * ncols, 3.5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    labels = _run_labels(run_dirs)
    for ax, key in zip(axes, keys, strict=False):
        for label, run in zip(labels, all_curves, strict=True):
            _draw_run(ax, run, key, label)
        ax.set_title(key)
        ax.set_xlabel("step (pipelines: stages end to end)" if any(r.stage_starts for r in all_curves) else "step")
        ax.legend(fontsize="small")
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `divalign plot`."""
    parser = subparsers.add_parser(
        "plot",
        help="plot diversity/* and loss curves of training runs",
        description="Plot `diversity/*` keys and `loss` against step from each run's trainer_state.json; a "
        "pipeline's output_root draws its stages end to end.",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="Trainer output directories, or a pipeline's output_root (its stages end to end)",
    )
    parser.add_argument("--out", default="diversity_curves.png", help="output PNG path")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="keys or patterns to plot (e.g. loss sbert 'distinct_*'); default: all",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign plot` from parsed arguments."""
    metrics = None if args.metrics is None else [m for arg in args.metrics for m in arg.split(",") if m]
    print(plot_runs(args.run_dirs, args.out, metrics))
    return 0
