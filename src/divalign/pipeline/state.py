"""What a stage directory says about a stage: finished with these inputs, interrupted, stale, or not ours.

A finished stage holds ``.divalign_stage_done.json``: the hash of its resolved inputs and a run id. The hash covers
the recipe file's content, the overrides, the model it loaded, the previous stage's hash *and run id*, the accelerate
config's content and the launch arguments; so rerunning an upstream stage (a new run id) invalidates everything
downstream of it, even when no file changed. A started stage is recorded under ``<output_root>/.divalign_state/``,
outside its output dir, because ``divalign.train`` refuses to start in a non-empty output dir.
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..launch.checkpoints import newest_complete
from ..launch.output_dir import finished_run
from ..set_aside import move_aside  # noqa: F401  (the pipeline's API names it here)

DONE_MARKER = ".divalign_stage_done.json"
STATE_DIR = ".divalign_state"


class Status(enum.Enum):
    """What to do with a stage directory, given the hash of the stage's inputs now."""

    FRESH = "fresh"  # absent or empty: train from scratch
    DONE = "done"  # finished with the same inputs: skip
    STALE = "stale"  # finished (or interrupted) with other inputs: refuse unless forced
    RESUME = "resume"  # interrupted after a complete checkpoint, same inputs: resume
    RESTART = "restart"  # started by the pipeline with the same inputs, killed before any checkpoint: start over
    TRAINED = "trained"  # divalign.train finished it with the same inputs, the pipeline stopped before marking it
    FOREIGN = "foreign"  # files but no marker and no checkpoint: refuse


@dataclass(frozen=True)
class Inspection:
    status: Status
    marker: dict[str, Any] | None = None
    detail: str = ""


def file_text(path: Path | None) -> str | None:
    return None if path is None else path.read_text()


def source_digest(source: str) -> str:
    """What identifies a data source in a hash: a local file's or folder's bytes (every file, by relative path), or,
    for a Hub id, the id itself."""
    path = Path(source).expanduser()
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode() + b"\0" + item.read_bytes())
    else:
        digest.update(f"hub:{source}".encode())
    return digest.hexdigest()


def inputs_hash(inputs: dict[str, Any]) -> str:
    """sha256 of the JSON of ``inputs`` with sorted keys: equal inputs, equal hash, whatever the dict order."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return content if isinstance(content, dict) else None


def read_marker(directory: Path) -> dict[str, Any] | None:
    return read_json(directory / DONE_MARKER)


def write_marker(
    directory: Path, digest: str, inputs: dict[str, Any], model_path: str, stopped_early: str | None = None
) -> dict[str, Any]:
    """Mark ``directory`` finished; the marker is written last, atomically, so its presence means a whole result.
    ``stopped_early``: why a diversity threshold ended the stage before its last step (the pipeline stops there)."""
    marker = {
        "hash": digest,
        "run_id": uuid.uuid4().hex,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_path": model_path,
        "inputs": inputs,
        **({"stopped_early": stopped_early} if stopped_early else {}),
    }
    temporary = directory / f"{DONE_MARKER}.tmp"
    temporary.write_text(json.dumps(marker, indent=2, sort_keys=True, default=str))
    temporary.replace(directory / DONE_MARKER)
    return marker


def started_path(output_root: Path, stage_name: str) -> Path:
    return output_root / STATE_DIR / f"{stage_name}.started.json"


def record_start(output_root: Path, stage_name: str, digest: str, output_dir: Path) -> None:
    """Remember which inputs an in-flight stage was started with, so a resume with other inputs is refused."""
    path = started_path(output_root, stage_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"hash": digest, "output_dir": str(output_dir), "started_at": time.time()}))


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a checkpoint a resume can start from (an incomplete one does not count)."""
    return newest_complete(directory) is not None


def inspect_dir(directory: Path, digest: str, started: dict[str, Any] | None) -> Inspection:
    """Classify ``directory`` for a stage whose inputs hash to ``digest`` (``started``: its start record, if any)."""
    if not directory.is_dir() or not any(directory.iterdir()):
        return Inspection(Status.FRESH)
    marker = read_marker(directory)
    if marker is not None:
        if marker.get("hash") == digest:
            return Inspection(Status.DONE, marker)
        return Inspection(Status.STALE, marker, "it finished with other inputs")
    same_start = started is not None and started.get("hash") == digest
    if finished_run(directory) is not None:
        if same_start:
            return Inspection(Status.TRAINED)
        if started is not None:
            return Inspection(Status.STALE, None, "it was trained with other inputs")
        return Inspection(Status.FOREIGN)
    if has_checkpoint(directory):
        if started is not None and not same_start:
            return Inspection(Status.STALE, None, "it was interrupted while running with other inputs")
        return Inspection(Status.RESUME)
    if same_start and started.get("output_dir") == str(directory):
        return Inspection(Status.RESTART)
    return Inspection(Status.FOREIGN)
