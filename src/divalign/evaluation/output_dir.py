"""`divalign eval --out`: never written over, and a failed evaluation's partial output replaced by the rerun.

An evaluation writes a marker into `--out` before its first sample file, listing the files it may write, and removes
it once its results are written. A run that fails in between (a quality function that raises, a crash) leaves its
samples for inspection, and the marker says whose they are: the next evaluation into the same `--out` replaces those
files. A folder holding anything the marker does not list is never touched: it is refused as any non-empty one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .. import set_aside

INCOMPLETE = ".divalign-eval-incomplete"
# What an evaluation writes into --out (report.py), and so what it may remove of a failed run's output
WRITTEN_FILES = ("results.json", "results.md", "diversity.png", "frontier.png", "homogeneity.png")
SAMPLES = "samples"


def _marker(out_dir: Path) -> dict | None:
    try:
        marker = json.loads((out_dir / INCOMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _partial_output(out_dir: Path) -> list[Path] | None:
    """The files of a failed evaluation in `out_dir` (its marker, and those of the files its marker lists that it
    wrote), or ``None`` when the folder holds no marker, or anything its marker does not list."""
    marker = _marker(out_dir)
    if marker is None or not isinstance(marker.get("files"), list):
        return None
    allowed = {INCOMPLETE, *(str(name) for name in marker["files"])}
    found: list[Path] = []
    for entry in out_dir.iterdir():
        inner = (
            list(entry.iterdir()) if entry.name == SAMPLES and entry.is_dir() and not entry.is_symlink() else [entry]
        )
        found += inner
    if any(p.is_symlink() or not p.is_file() or p.relative_to(out_dir).as_posix() not in allowed for p in found):
        return None
    return found


def _running_writer(out_dir: Path) -> int | None:
    """The process id of an evaluation on this machine still writing `out_dir`, else ``None``."""
    try:
        writer = _marker(out_dir) or {}
        pid, host = int(writer["pid"]), writer["host"]
    except (ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    return pid


def check_out_dir(out_dir: Path, move_aside: bool) -> None:
    """Never write over an earlier evaluation: refuse a non-empty `out_dir`, or move it aside when asked; the
    partial output of a failed evaluation (see the module docstring) is replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if move_aside:
        print(f"divalign eval: moved the earlier {out_dir} aside to {set_aside.move_aside(out_dir)}")
        return
    partial = _partial_output(out_dir)
    running = _running_writer(out_dir) if partial is not None else None
    if running is not None:
        raise ValueError(f"--out {out_dir} is being written by another divalign eval (process {running}); wait for it")
    if partial is None:
        raise ValueError(
            f"--out {out_dir} already holds files (an earlier evaluation?); choose another --out, or pass "
            "--move-aside to keep the old one as <out>.old-<time> and write a new one"
        )
    for path in partial:
        path.unlink()
    if (out_dir / SAMPLES).is_dir():
        (out_dir / SAMPLES).rmdir()
    print(f"divalign eval: replaced the partial output of an evaluation that failed in {out_dir}")


@contextlib.contextmanager
def incomplete_output(out_dir: Path, sample_names: Iterable[str]) -> Iterator[None]:
    """Mark `out_dir` as being written (see the module docstring) by an evaluation that writes `sample_names`
    (`samples/<name>.jsonl`) and the result files, while the block runs; the mark stays when it fails, with a note
    saying where the samples written so far are and that the same command replaces them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    note = "divalign eval is writing this folder, or failed before it finished; the next one replaces these files"
    files = [f"{SAMPLES}/{name}.jsonl" for name in sample_names] + list(WRITTEN_FILES)
    writer = {"note": note, "files": files, "pid": os.getpid(), "host": socket.gethostname()}
    (out_dir / INCOMPLETE).write_text(json.dumps(writer) + "\n", encoding="utf-8")
    try:
        yield
    except BaseException:
        if (out_dir / SAMPLES).is_dir():
            print(
                f"divalign eval: stopped before its results were written; the samples written so far are in "
                f"{out_dir / SAMPLES}, and running the same command again replaces them",
                file=sys.stderr,
            )
        raise
    (out_dir / INCOMPLETE).unlink(missing_ok=True)
