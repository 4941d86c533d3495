"""The ``checkpoint-<step>`` directories of a run: which are complete, and what to do with one a kill cut short.

transformers' ``Trainer._save_checkpoint`` writes, in order, the model (and tokenizer), the optimizer and scheduler,
the RNG states, and last ``trainer_state.json`` (then rotates old checkpoints). A checkpoint is therefore *complete*
when its ``trainer_state.json`` exists and parses; one without it was interrupted while saving. Resuming from such a
directory fails ("Can't find a valid checkpoint"), and training on past it would save the next checkpoint over its
leftovers, so an incomplete checkpoint is moved aside under a name transformers never matches (nor rotates away):
``incomplete-checkpoint-<step>-<UTC timestamp>``. Nothing is deleted.

Every checkpoint lookup in divalign (resume, ``divalign plot``, the toy demo's trajectories, a pipeline's stage
state) goes through this module rather than transformers' ``get_last_checkpoint``, which returns the newest
``checkpoint-*`` directory whether or not its save finished
(``tests/test_run_lifecycle.py::test_get_last_checkpoint_takes_a_half_written_checkpoint``).
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..set_aside import move_aside

# transformers' `trainer_utils.PREFIX_CHECKPOINT_DIR`, spelled out so that `divalign plot` and `divalign --help` load
# no transformers (tests/test_run_lifecycle.py checks the two agree)
PREFIX_CHECKPOINT_DIR = "checkpoint"

TRAINER_STATE = "trainer_state.json"
INCOMPLETE_PREFIX = "incomplete-"
# What a checkpoint holds beyond the model: the state to continue training, not part of a final model directory
TRAINING_STATE_FILES = re.compile(
    r"(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|latest|zero_to_fp32\.py)"
)
WEIGHT_FILES = re.compile(r"(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def read_trainer_state(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint's ``trainer_state.json``, or ``None`` when it is missing or unreadable (an incomplete save)."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def is_complete(checkpoint: Path) -> bool:
    return read_trainer_state(checkpoint) is not None


def checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-<step>`` directories of ``output_dir``, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [(step, path) for path in output_dir.iterdir() if (step := checkpoint_step(path)) is not None]
    return [path for _, path in sorted(found)]


def newest_complete(output_dir: Path) -> Path | None:
    complete = [path for path in checkpoints(output_dir) if is_complete(path)]
    return complete[-1] if complete else None


def incomplete_after(output_dir: Path, checkpoint: Path | None) -> list[Path]:
    """Incomplete checkpoints newer than ``checkpoint`` (all of them when it is ``None``)."""
    floor = -1 if checkpoint is None else checkpoint_step(checkpoint)
    return [path for path in checkpoints(output_dir) if checkpoint_step(path) > floor and not is_complete(path)]


def move_incomplete_aside(checkpoint: Path) -> Path:
    """Rename an incomplete checkpoint out of transformers' sight; returns its new path."""
    target = move_aside(checkpoint, INCOMPLETE_PREFIX + "{name}-{stamp}")
    warnings.warn(
        f"{checkpoint} is incomplete (no {TRAINER_STATE}: the run was killed while saving it); moved aside to "
        f"{target.name}, resuming from the newest complete checkpoint instead",
        stacklevel=2,
    )
    return target


def newest_resumable(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, after moving aside every incomplete one newer than it."""
    newest = newest_complete(output_dir)
    for checkpoint in incomplete_after(output_dir, newest):
        move_incomplete_aside(checkpoint)
    return newest


def model_files(checkpoint: Path) -> list[Path]:
    """The files of a checkpoint that make up a model directory (weights, config, tokenizer, generation config)."""
    return [p for p in sorted(checkpoint.iterdir()) if p.is_file() and not TRAINING_STATE_FILES.fullmatch(p.name)]


def export_model(checkpoint: Path, output_dir: Path) -> list[Path]:
    """Copy the model files of ``checkpoint`` (and its ``trainer_state.json``) into ``output_dir``.

    What ``Trainer.save_model`` + ``save_state`` would write there at the end of training, taken from the checkpoint
    that training saved at its last step. Raises ``FileNotFoundError`` when the checkpoint holds no weights file
    (e.g. ZeRO-3 shards only, without ``zero3_save_16bit_model``).
    """
    files = model_files(checkpoint)
    if not any(WEIGHT_FILES.fullmatch(p.name) for p in files):
        raise FileNotFoundError(f"{checkpoint} holds no model weights file (model*.safetensors, adapter_model.*)")
    for path in files:
        shutil.copy2(path, output_dir / path.name)
    return files
