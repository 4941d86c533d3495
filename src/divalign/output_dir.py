"""The output directory of a stage: never silently overwritten, resumable, and holding the resolved recipe."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml
from accelerate import PartialState
from transformers.trainer_utils import get_last_checkpoint

from .recipe import RecipeError

RESOLVED_RECIPE = "divalign_recipe.yaml"
RESUME_WORDS = {"true", "last", "latest"}


def _writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".divalign_write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RecipeError(f"output_dir {directory} is not writable: {error}") from error


def prepare_output_dir(training_args) -> str | bool | None:
    """Check ``output_dir`` and return what to pass as ``resume_from_checkpoint`` to ``Trainer.train``.

    A non-empty directory is refused unless ``resume_from_checkpoint`` asks to continue it ('true'/'last' for its
    newest checkpoint, or a checkpoint path), so a finished run is never overwritten by accident.
    """
    directory = Path(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    wants_last = isinstance(resume, str) and resume.lower() in RESUME_WORDS
    if wants_last:
        last = get_last_checkpoint(str(directory)) if directory.is_dir() else None
        if last is None:
            raise RecipeError(f"resume_from_checkpoint={resume!r}, but output_dir {directory} holds no checkpoint-*")
        resume = last
    elif resume and not Path(resume).is_dir():
        raise RecipeError(f"resume_from_checkpoint {resume!r} is not a checkpoint directory")
    if not resume and directory.is_dir() and any(directory.iterdir()):
        raise RecipeError(
            f"output_dir {directory} is not empty; choose a new directory, or pass --resume_from_checkpoint true "
            "to continue from its last checkpoint"
        )
    # Every rank has checked the directory before any of them writes into it
    state = PartialState()
    state.wait_for_everyone()
    if state.is_main_process:
        _writable(directory)
    return resume or None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def write_resolved_recipe(output_dir: str, trainer: str, diversity: dict | None, *arg_groups) -> Path:
    """Write every resolved key of the run (defaults included) next to the model."""
    resolved: dict[str, Any] = {"trainer": trainer}
    for group in arg_groups:
        values = group.to_dict() if hasattr(group, "to_dict") else dataclasses.asdict(group)
        resolved.update(_plain(values))
    if diversity is not None:
        resolved["diversity"] = _plain(diversity)
    path = Path(output_dir) / RESOLVED_RECIPE
    path.write_text(yaml.safe_dump(resolved, sort_keys=True))
    return path
