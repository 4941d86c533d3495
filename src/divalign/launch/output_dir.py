"""The output directory of a stage: never silently overwritten, resumed only as it was started, and holding a
resolved recipe that records exactly what trained it.

What a directory can hold, and what ``divalign.train`` does with it:

- nothing, or only what a run writes before its first checkpoint (:data:`START_ENTRIES`): a run that never got going;
  it starts (again) from scratch, so a failure before the first checkpoint never blocks the directory;
- ``checkpoint-*`` but no final model: an interrupted run; resumed with ``--resume_from_checkpoint true`` from its
  newest *complete* checkpoint (incomplete ones are moved aside, :mod:`divalign.launch.checkpoints`), and only with the
  hyper-parameters it started with (or ``resume_with_changes: true``, recorded under ``resumes:``; what a changed
  value does to the restored optimizer and scheduler: :mod:`divalign.launch.resume_changes`);
- a finished run (:data:`FINISHED_MARKER`): refused, resume included — there is nothing left to train;
- anything else: refused, nothing is overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from ..dashboards import SAMPLES_FILE, SAMPLES_REPLACED_PREFIX
from .checkpoints import (
    INCOMPLETE_PREFIX,
    TRAINER_STATE,
    checkpoint_step,
    is_complete,
    newest_complete,
    newest_resumable,
    read_trainer_state,
)
from .recipe import RUN_OPTIONS, RecipeError, RunOptions
from .resume_changes import refuse_ineffective
from .run_lock import LOCK_FILE

RESOLVED_RECIPE = "divalign_recipe.yaml"
FINISHED_MARKER = "divalign_finished.json"
RESUME_WORDS = {"true", "last", "latest"}
NO_RESUME_WORDS = {"false", "no", "none", ""}
# Written before the first checkpoint: the resolved recipe, the lock, TensorBoard's default log folder, the samples of
# the step-0 diversity evaluation (and those an earlier attempt wrote, moved aside when the run starts over)
START_ENTRIES = {RESOLVED_RECIPE, LOCK_FILE, "runs", SAMPLES_FILE}
START_PREFIXES = (INCOMPLETE_PREFIX, SAMPLES_REPLACED_PREFIX)
RESUMES_KEY = "resumes"
# Keys that change how a run is launched, logged or saved, not what it trains: free to differ on resume
RESUME_NEUTRAL_KEYS = {
    *RUN_OPTIONS,
    *["resume_from_checkpoint", "output_dir", "run_name", "report_to", "project", "local_rank", "ddp_backend"],
    *["ddp_timeout", "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter"],
    *["disable_tqdm", "log_level", "log_level_replica", "log_on_each_node", "save_steps", "save_strategy"],
    *["save_total_limit", "push_to_hub", "dataloader_num_workers", "dataloader_prefetch_factor"],
    *["dataloader_persistent_workers", "dataloader_pin_memory"],
}
_NEUTRAL_PREFIXES = ("hub_", "trackio_")


@dataclass(frozen=True)
class OutputPlan:
    """What to do in the output directory, decided before the model loads."""

    resume_from: str | None = None  # checkpoint to hand to Trainer.train
    export_from: str | None = None  # a checkpoint that already reached max_steps: its model becomes the output
    resumes: list[dict[str, Any]] = field(default_factory=list)  # every resume so far, for divalign_recipe.yaml
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # this resume's changed values (before/after)


def _plain(value: Any) -> Any:
    """``value`` as the YAML file will hold it (tuples → lists, objects → strings), for comparing."""
    return yaml.safe_load(yaml.safe_dump(json.loads(json.dumps(value, default=str))))


def resolve_recipe(
    trainer: str, diversity: Any | None, env: dict[str, str], options: RunOptions, *arg_groups: Any
) -> dict[str, Any]:
    """Every resolved key of a run (defaults included): what ``divalign_recipe.yaml`` records."""
    resolved: dict[str, Any] = {"trainer": trainer, **dataclasses.asdict(options)}
    for group in arg_groups:
        resolved.update(group.to_dict() if hasattr(group, "to_dict") else dataclasses.asdict(group))
    if diversity is not None:
        resolved["diversity"] = dataclasses.asdict(diversity) if dataclasses.is_dataclass(diversity) else diversity
    if env:
        resolved["env"] = dict(env)
    return _plain(resolved)


def write_resolved_recipe(output_dir: str, resolved: dict[str, Any], resumes: list[dict[str, Any]] = ()) -> Path:
    """Write the run's resolved recipe (and its resume history, when it was resumed) next to the model."""
    content = {**resolved, **({RESUMES_KEY: list(resumes)} if resumes else {})}
    path = Path(output_dir) / RESOLVED_RECIPE
    path.write_text(yaml.safe_dump(content, sort_keys=True))
    return path


class RecordRecipeOnSave(TrainerCallback):
    """Write a resumed run's resolved recipe (with this resume appended) once its first new checkpoint is saved:
    until then the checkpoints in the directory were all trained with the values already recorded."""

    def __init__(self, output_dir: str, resolved: dict[str, Any], resumes: list[dict[str, Any]]):
        self.output_dir, self.resolved, self.resumes = output_dir, resolved, resumes
        self.written = False

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.written and state.is_world_process_zero:
            write_resolved_recipe(self.output_dir, self.resolved, self.resumes)
            self.written = True


def write_finished(output_dir: str, global_step: int, stopped_early: str | None = None) -> Path:
    """Mark the run finished; written last, so its presence means the final model is whole. ``stopped_early`` says
    why training ended before its last step (a diversity ``stop_below`` threshold)."""
    path = Path(output_dir) / FINISHED_MARKER
    record = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "global_step": global_step}
    if stopped_early is not None:
        record["stopped_early"] = stopped_early
    temporary = path.with_name(f"{FINISHED_MARKER}.tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(path)
    return path


def finished_run(directory: Path) -> dict[str, Any] | None:
    """What a finished run in ``directory`` recorded, or ``None`` when it holds none.

    The marker, or (runs of older divalign versions) the final ``trainer_state.json`` that ``save_state`` writes
    at the end of training, outside any checkpoint.
    """
    marker = directory / FINISHED_MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text())
        except json.JSONDecodeError:
            return {}
    state = read_trainer_state(directory)
    return None if state is None else {"global_step": state.get("global_step")}


REBASED = (
    "a new run from it measures diversity/retained/* and its alert_below/stop_below against its own step 0, this "
    "stopped model, not against this run's step 0"
)


def _refuse_finished(directory: Path, record: dict[str, Any]) -> None:
    when = f", finished {record['finished_at']}" if record.get("finished_at") else ""
    if record.get("stopped_early"):
        when += f", stopped early: {record['stopped_early']}"
    rebased = f" ({REBASED})" if record.get("stopped_early") else ""
    raise RecipeError(
        f"output_dir {directory} holds a finished run (step {record.get('global_step')}{when}); there is nothing to "
        f"resume. To train it further, start a new run from it (--model_name_or_path {directory} --output_dir "
        f"NEW_DIR){rebased}; to run it again, choose another output_dir"
    )


def stopped_start_note(model: str) -> str | None:
    """What a run with a ``diversity:`` block must be told when ``model`` is a run a diversity threshold stopped: its
    step-0 reference is that stopped model (:data:`REBASED`), or ``None``."""
    record = finished_run(Path(model)) if Path(model).is_dir() else None
    if not record or not record.get("stopped_early"):
        return None
    return (
        f"model_name_or_path {model} is a run a diversity threshold stopped ({record['stopped_early']}); this run's "
        f"step-0 diversity reference is that stopped model: diversity/retained/* and alert_below/stop_below measure "
        f"from there, not from the step 0 of the run in {model} (its values are in {Path(model) / TRAINER_STATE})"
    )


def check_output_path(output_dir: str | Path) -> None:
    """Refuse an ``output_dir`` that is a file, or lies under one, before anything is created (dry runs too)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise RecipeError(f"output_dir {path} is a file, not a directory; give output_dir a directory path")
    existing = next((parent for parent in path.parents if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise RecipeError(f"output_dir {path} lies under {existing}, which is a file, not a directory")


def outermost_missing(directory: str | Path) -> Path | None:
    """The outermost folder of ``directory``'s path that does not exist yet (what creating it creates), or ``None``."""
    missing = None
    for path in (Path(directory), *Path(directory).parents):
        if path.exists():
            break
        missing = path
    return missing


def remove_if_unused(created: Path | None) -> None:
    """Remove ``created`` (a folder this run created) and the folders under it, unless a file was written in them:
    a run that stops before writing anything leaves no empty ``output_dir`` behind."""
    if created is None or not created.is_dir() or any(p.is_file() or p.is_symlink() for p in created.rglob("*")):
        return
    try:
        for folder in sorted(created.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            folder.rmdir()
        created.rmdir()
    except OSError:  # something was written meanwhile: keep it
        pass


def _foreign_entries(directory: Path) -> list[str]:
    """Entries other than a never-started run's files and moved-aside incomplete checkpoints."""
    if not directory.is_dir():
        return []
    return sorted(
        p.name for p in directory.iterdir() if p.name not in START_ENTRIES and not p.name.startswith(START_PREFIXES)
    )


def _refuse_non_empty(directory: Path, entries: list[str]) -> None:
    newest = newest_complete(directory)
    if newest is not None:
        raise RecipeError(
            f"output_dir {directory} holds an interrupted run (newest complete checkpoint: {newest.name}); pass "
            "--resume_from_checkpoint true to continue it, or choose another output_dir"
        )
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise RecipeError(
        f"output_dir {directory} is not empty ({shown}); choose a new directory, or pass --resume_from_checkpoint "
        "true to continue a run from its last checkpoint"
    )


def _checkpoint_to_resume(directory: Path, resume: Any) -> Path:
    if isinstance(resume, str) and resume.lower() in RESUME_WORDS:
        checkpoint = newest_resumable(directory)
        if checkpoint is None:
            raise RecipeError(
                f"resume_from_checkpoint={resume!r}, but output_dir {directory} holds no complete checkpoint-*; "
                "run the same command without --resume_from_checkpoint to start over"
            )
        return checkpoint
    checkpoint = Path(resume)
    if not checkpoint.is_dir():
        raise RecipeError(f"resume_from_checkpoint {resume!r} is not a checkpoint directory")
    if not is_complete(checkpoint):
        raise RecipeError(
            f"resume_from_checkpoint {resume!r} is incomplete (no {TRAINER_STATE}: its save was interrupted); "
            "resume from an earlier checkpoint"
        )
    return checkpoint


def _changed_keys(key: str, before: Any, after: Any) -> dict[str, dict[str, Any]]:
    """The changes between two values of ``key``: a mapping on both sides (the ``diversity:`` block, ``env:``, ...)
    by its own keys, ``key.sub``, so that a message names what changed rather than repeating the whole block."""
    if before == after:
        return {}
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return {key: {"before": before, "after": after}}
    changes: dict[str, dict[str, Any]] = {}
    for sub in sorted(set(before) | set(after), key=str):
        changes.update(_changed_keys(f"{key}.{sub}", before.get(sub), after.get(sub)))
    return changes


def recipe_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"before": ..., "after": ...}}`` for every key that trains differently in ``after``; within a mapping
    such as ``diversity:``, every changed key of it (``diversity.stop_below.ead``)."""
    keys = (set(before) | set(after)) - RESUME_NEUTRAL_KEYS - {RESUMES_KEY}
    changes: dict[str, dict[str, Any]] = {}
    for key in sorted(keys):
        if not key.startswith(_NEUTRAL_PREFIXES):
            changes.update(_changed_keys(key, before.get(key), after.get(key)))
    return changes


def _stored_recipe(checkpoint: Path, directory: Path) -> dict[str, Any] | None:
    for candidate in (directory / RESOLVED_RECIPE, checkpoint.parent / RESOLVED_RECIPE):
        if candidate.is_file():
            content = yaml.safe_load(candidate.read_text())
            return content if isinstance(content, dict) else None
    return None


def _resume_record(
    checkpoint: Path, directory: Path, resolved: dict[str, Any], options: RunOptions
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The resume history with this resume appended, and the hyper-parameter changes it makes (refused unless
    ``resume_with_changes``)."""
    stored = _stored_recipe(checkpoint, directory)
    changes = {} if stored is None else recipe_changes(stored, resolved)
    if changes and not options.resume_with_changes:
        listed = "; ".join(f"{k}: {v['before']!r} -> {v['after']!r}" for k, v in changes.items())
        raise RecipeError(
            f"resuming {checkpoint} with other hyper-parameters than the run started with ({listed}). Resume with "
            "the same values, or pass --resume_with_changes true to continue anyway (the changes are recorded in "
            f"{RESOLVED_RECIPE} under `{RESUMES_KEY}`)"
        )
    refuse_ineffective(changes, str(checkpoint))
    entry = {
        "step": checkpoint_step(checkpoint) if checkpoint_step(checkpoint) is not None else str(checkpoint),
        "checkpoint": str(checkpoint),
        "resumed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"changes": changes} if changes else {}),
        **({} if stored is not None else {"unchecked": f"no {RESOLVED_RECIPE} to compare the run's values with"}),
    }
    return [*((stored or {}).get(RESUMES_KEY) or []), entry], changes


def _already_done(checkpoint: Path, training_args: Any, changes: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` already reached the run's last step (training stopped while saving the final model)."""
    state = read_trainer_state(checkpoint) or {}
    target = training_args.max_steps if training_args.max_steps > 0 else state.get("max_steps")
    if training_args.max_steps <= 0 and "num_train_epochs" in changes:
        return False  # more epochs asked for: the checkpoint's own step budget no longer applies
    return isinstance(target, int) and target > 0 and state.get("global_step", 0) >= target


def prepare_output_dir(training_args: Any, resolved: dict[str, Any], options: RunOptions) -> OutputPlan:
    """Check ``output_dir`` and decide how the run uses it (call on the main process only, under its lock).

    Raises a :class:`RecipeError` for a finished run, a non-empty directory without a resume request, a resume
    without a complete checkpoint, and a resume with changed hyper-parameters (unless ``options`` allows it).
    """
    directory = Path(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in NO_RESUME_WORDS:
        resume = None
    finished = finished_run(directory) if directory.is_dir() else None
    if finished is not None:
        _refuse_finished(directory, finished)
    if not resume:
        entries = _foreign_entries(directory)
        if entries:
            _refuse_non_empty(directory, entries)
        return OutputPlan()
    checkpoint = _checkpoint_to_resume(directory, resume)
    resumes, changes = _resume_record(checkpoint, directory, resolved, options)
    if _already_done(checkpoint, training_args, changes):
        return OutputPlan(export_from=str(checkpoint), resumes=resumes)
    return OutputPlan(resume_from=str(checkpoint), resumes=resumes, changes=changes)
