"""Where divalign puts what it replaces: beside the original, under a name with the UTC time that nothing has yet.

Nothing is deleted: an earlier evaluation, a pipeline stage rerun, a checkpoint cut short by a kill and sample rows
of an attempt that a resume replays are each kept under such a name.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path


def aside_path(path: Path, template: str = "{name}.old-{stamp}") -> Path:
    """A free path beside ``path`` named by ``template``: ``{name}`` is ``path``'s name, ``{stamp}`` the UTC time
    (``20261130-154500``), then ``20261130-154500-1``, ``-2``, ... until no file or directory has the name."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for suffix in itertools.count():
        candidate = path.with_name(template.format(name=path.name, stamp=f"{stamp}-{suffix}" if suffix else stamp))
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def move_aside(path: Path, template: str = "{name}.old-{stamp}") -> Path:
    """Rename ``path`` to :func:`aside_path`; returns the new path."""
    target = aside_path(path, template)
    path.rename(target)
    return target
