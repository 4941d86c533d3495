"""What a training run logged, read back for `divalign plot`: every numeric key of the Trainer's `trainer_state.json`
(its `log_history`) against the step, from the run directory or its newest checkpoint.

A pipeline's `output_root` (`divalign pipeline` records its stages there) reads end to end: each stage's values
shifted by the steps of the stages before it (the `pipeline/step` its W&B runs log), with where each stage starts.
Each run's (each stage's) objective is the `trainer:` its resolved recipe names, so losses of different objectives
can be kept apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .launch.checkpoints import TRAINER_STATE, checkpoints, newest_complete

Curves = dict[str, list[tuple[int, float]]]
PIPELINE_MANIFEST = Path(".divalign_state") / "pipeline.json"  # written by divalign.pipeline.runner.write_manifest
# launch.output_dir.RESOLVED_RECIPE, spelled out: that module loads transformers, and `divalign plot` need not
RESOLVED_RECIPE = "divalign_recipe.yaml"


@dataclass
class RunCurves:
    """What one RUN_DIR argument holds: one segment of curves per training run (a pipeline: one per stage, steps
    already shifted) and, for a pipeline, where each stage starts."""

    segments: list[Curves]
    stage_starts: list[tuple[int, str]] = field(default_factory=list)
    objectives: list[str | None] = field(default_factory=list)  # per segment: its trainer, None when unknown

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


def load_curves(run_dir: str | Path) -> Curves:
    """Map each numeric key of the run's log history (``loss``, ``grad_norm``, ``diversity/*``...) to its (step,
    value) points; NaN values are left out."""
    path = find_trainer_state(run_dir)
    try:
        history = json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    curves: Curves = {}
    for entry in history:
        step = entry.get("step")
        for key, value in entry.items():
            if step is None or key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isnan(float(value)):
                curves.setdefault(key, []).append((int(step), float(value)))
    return curves


def run_objective(run_dir: str | Path) -> str | None:
    """The objective a run trained: the `trainer:` of its resolved recipe (`sft`, `tofu`, `gem`, `dpo`, `grpo`);
    None for a run divalign did not launch (no recipe there, or none that parses)."""
    import yaml

    path = Path(run_dir) / RESOLVED_RECIPE
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    trainer = recipe.get("trainer") if isinstance(recipe, dict) else None
    return trainer if isinstance(trainer, str) else None


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
        run.objectives.append(run_objective(directory))
        offset += _trained_steps(directory)
    if not run.segments:
        raise FileNotFoundError(f"No stage of the pipeline in {output_root} has a trainer_state.json yet")
    return run


def load_run(run_dir: str | Path) -> RunCurves:
    """A training run's curves, or a pipeline's stages end to end when ``run_dir`` is its ``output_root``."""
    if (Path(run_dir) / PIPELINE_MANIFEST).is_file():
        return load_pipeline_curves(run_dir)
    return RunCurves(segments=[load_curves(run_dir)], objectives=[run_objective(run_dir)])


def run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Run directory names, or the paths as given when two runs share a name (runs/a/out vs runs/b/out)."""
    names = [Path(d).resolve().name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]
