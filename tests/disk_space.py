"""Room for the suite's temporary folders, checked before any test runs.

The real-model tests convert SmolLM2 and train it through compare and GRPO cells, each saving a 0.5 GB checkpoint in
pytest's temporary folders; a disk that fills up halfway fails them after a quarter of an hour with an I/O error from
safetensors.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

GB = 10**9
# the whole suite's temporary folders peaked at 3.8 GB (a fresh clone's `make test`, 2026-12-07); the margin is for
# the W&B and launch files that land beside them
NEEDED_BYTES = 6 * GB


REAL_MODEL_TESTS = Path(__file__).with_name("test_realworld_demo.py")


def selects_real_model_tests(args: list[str], base: Path) -> bool:
    """Whether a run of these test paths (relative to `base`) reaches the real-model tests; `-k`/`-m` filters are
    not read, so a filtered run may be asked for room it does not use."""
    paths = [(base / arg.split("::")[0]).resolve() for arg in args]
    return any(REAL_MODEL_TESTS.resolve().is_relative_to(path) for path in paths)


def temporary_root(basetemp: str | None) -> Path:
    """Where pytest puts its temporary folders: `--basetemp`, else the system's temporary directory (TMPDIR)."""
    return Path(basetemp) if basetemp else Path(tempfile.gettempdir())


def existing_ancestor(path: Path) -> Path:
    """`path` or its nearest existing parent: `--basetemp` may name a folder pytest has yet to make."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def require_free_disk(root: Path, needed: int | None = None) -> None:
    """Refuse to start the run (a usage error naming the folder, what is free and what is needed) when the disk under
    `root` has less than `needed` bytes (NEEDED_BYTES by default) free."""
    needed = NEEDED_BYTES if needed is None else needed
    free = shutil.disk_usage(existing_ancestor(root)).free
    if free < needed:
        raise pytest.UsageError(
            f"the test suite needs about {needed / GB:.0f} GB free for its temporary folders under {root} "
            f"(the real-model tests save 0.5 GB checkpoints); {free / GB:.1f} GB is free there. Free some space, or "
            "point TMPDIR (or pytest's --basetemp) at a disk with room."
        )
