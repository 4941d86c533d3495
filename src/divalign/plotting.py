"""`divalign plot`: training curves of `diversity/*` metrics and the loss, several runs side by side.

Reads the Trainer's `trainer_state.json` (its `log_history`), from the run directory or its newest checkpoint.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
from pathlib import Path
from typing import Any

Curves = dict[str, list[tuple[int, float]]]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def find_trainer_state(run_dir: str | Path) -> Path:
    """`RUN_DIR/trainer_state.json`, else the one in the newest (highest-step) `checkpoint-*` directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory not found: {run_dir}")
    top = run_dir / "trainer_state.json"
    if top.is_file():
        return top
    checkpoints = sorted(
        (int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()
    )
    for _, ckpt in reversed(checkpoints):
        if (ckpt / "trainer_state.json").is_file():
            return ckpt / "trainer_state.json"
    raise FileNotFoundError(
        f"No trainer_state.json in {run_dir} or in any of its checkpoint-* directories "
        f"({len(checkpoints)} found); expected the output_dir of a transformers/TRL Trainer run"
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


_BAND = ("_p10", "_p90")


def select_keys(all_curves: list[Curves], patterns: list[str] | None) -> list[str]:
    """Keys to plot: loss first, then the rest sorted; `patterns` filter by full key or by the part after `/`.

    `<key>_p10` / `<key>_p90` are drawn as a band around `<key>` rather than as subplots of their own.
    """
    present = {k for c in all_curves for k in c}
    keys = sorted((k for k in present if not (k.endswith(_BAND) and k[:-4] in present)), key=lambda k: (k != "loss", k))
    if patterns:
        # `sbert` should find `diversity/sbert`; shell-style patterns (`diversity/distinct_*`) also work.
        keys = [k for k in keys if any(fnmatch.fnmatch(k, p) or fnmatch.fnmatch(k.split("/")[-1], p) for p in patterns)]
    return keys


def _run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Run directory names, or the paths as given when two runs share a name (runs/a/out vs runs/b/out)."""
    names = [Path(d).resolve().name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _draw(ax: Any, curves: Curves, key: str, label: str) -> None:
    steps, values = zip(*curves[key], strict=True)
    (line,) = ax.plot(steps, values, marker=".", label=label)
    low, high = dict(curves.get(key + "_p10", [])), dict(curves.get(key + "_p90", []))
    band = [s for s in steps if s in low and s in high]
    if band:  # spread over prompts, when the callback logged it
        ax.fill_between(band, [low[s] for s in band], [high[s] for s in band], color=line.get_color(), alpha=0.15)


def plot_runs(run_dirs: list[str | Path], out: str | Path, metrics: list[str] | None = None) -> Path:
    """Draw one subplot per logged key, one line per run (legend = run directory name); returns the PNG path."""
    from matplotlib.figure import Figure  # the Figure API needs no GUI backend

    if not run_dirs:
        raise ValueError("plot needs at least one run directory")
    all_curves = [load_curves(d) for d in run_dirs]
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
        for label, curves in zip(labels, all_curves, strict=True):
            if key in curves:
                _draw(ax, curves, key, label)
        ax.set_title(key)
        ax.set_xlabel("step")
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
        "plot", help="plot diversity/* and loss curves of training runs",
        description="Plot `diversity/*` keys and `loss` against step from each run's trainer_state.json.",
    )  # fmt: skip
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="Trainer output directories")
    parser.add_argument("--out", default="diversity_curves.png", help="output PNG path")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="keys or patterns to plot (e.g. loss sbert 'distinct_*'); default: all")  # fmt: skip
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign plot` from parsed arguments."""
    metrics = None if args.metrics is None else [m for arg in args.metrics for m in arg.split(",") if m]
    print(plot_runs(args.run_dirs, args.out, metrics))
    return 0
