"""One run per output directory: a lock file naming its owner (host, pid, start time), taken atomically.

A second run started into the same directory is refused with the owner's name. A lock whose owner is gone — the pid
is dead on this host, or the pid now belongs to another process (a different start time) — is stale: it is taken
over with a warning, so a killed run never blocks the directory. A lock from another host cannot be checked from here
and is refused; the message says which file to remove once that run is known to be gone.

Deleting ``.divalign_lock`` (by hand, or a cleanup script) lets a second run take the directory; from then on two runs
would save checkpoints, the resolved recipe and the final model into one place. So the running one checks its lock
before each save — a checkpoint (:class:`LockGuard`), and the final model (:func:`require_lock`) — and stops without
writing when the lock no longer holds its record, so its newest checkpoint stays as it was. Under a distributed
launch the main process, which holds the lock, decides for every rank (:mod:`divalign.launch.main_process`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .main_process import decide_on_main
from .recipe import RecipeError

LOCK_FILE = ".divalign_lock"


class RunLockError(RecipeError):
    """The directory is locked by another live run (or by one on another host)."""


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or ``None`` where unknown.

    With the pid it identifies a process across pid reuse: a recycled pid has another start time.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])  # field 22 of stat(5), counted after the command name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def owner_record() -> dict[str, Any]:
    """Who is taking the lock: host, pid, its start ticks, wall-clock start, command line and a unique token."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start_ticks": process_start_ticks(os.getpid()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "token": uuid.uuid4().hex,
    }


def describe(owner: dict[str, Any]) -> str:
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started_at')} ({owner.get('command')})"


def is_stale(owner: dict[str, Any]) -> bool | None:
    """True when the owner is certainly gone, False when it is alive, None when it cannot be told (another host)."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return True
    recorded, now = owner.get("pid_start_ticks"), process_start_ticks(pid)
    return recorded is not None and now is not None and recorded != now


def _read_owner(path: Path) -> dict[str, Any] | None:
    """The lock's owner, retried briefly: a lock just created may not hold its record yet."""
    for _ in range(20):
        try:
            content = json.loads(path.read_text())
            if isinstance(content, dict):
                return content
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    return {}


class RunLock:
    """The lock on ``directory`` (a context manager): acquired on enter, released on exit.

    Example:
        >>> with RunLock("runs/tofu"):
        ...     train()
    """

    def __init__(self, directory: str | os.PathLike, what: str = "output_dir"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.what = what
        self.owner: dict[str, Any] | None = None

    def acquire(self) -> RunLock:
        record = owner_record()
        while True:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(record)
                if self.owner is not None:
                    return self
                continue  # the stale lock vanished meanwhile: try again
            except OSError as error:
                raise RecipeError(f"{self.what} {self.directory} is not writable: {error}") from error
            with os.fdopen(descriptor, "w") as handle:
                json.dump(record, handle)
            self.owner = record
            return self

    def _take_over_if_stale(self, record: dict[str, Any]) -> None:
        owner = _read_owner(self.path)
        if owner is None:
            return  # released meanwhile
        if not owner:
            raise RunLockError(f"{self.path} is not a divalign lock record; if no run uses {self.directory}, remove it")
        stale = is_stale(owner)
        if stale is not True:
            where = "" if stale is False else " (on another host: it cannot be checked from here)"
            raise RunLockError(
                f"{self.what} {self.directory} is in use by another run{where}: {describe(owner)}. Wait for it to "
                f"finish or choose another {self.what}; if that run is gone, remove {self.path}"
            )
        temporary = self.path.with_name(f"{LOCK_FILE}.{record['token']}")
        temporary.write_text(json.dumps(record))
        temporary.replace(self.path)
        if _read_owner(self.path) == record:  # two runs taking over at once: the last rename wins
            message = f"{self.what} {self.directory}: took over the stale lock of {describe(owner)}, no longer running"
            warnings.warn(message, stacklevel=3)
            self.owner = record

    def still_held(self) -> bool:
        """Whether the lock file still holds this run's record (not deleted, not taken over by another run)."""
        return self.owner is not None and _read_owner(self.path) == self.owner

    def lost_message(self, what_stops: str) -> str:
        """The error of a run whose lock was deleted or taken while it ran."""
        owner = _read_owner(self.path)
        now = f"now held by {describe(owner)}" if owner else "deleted"
        return (
            f"{self.what} {self.directory}: the lock {self.path} no longer names this run ({now}), so another run may "
            f"be writing here; stopped {what_stops}. Make sure no other run uses {self.directory}, then continue "
            "with --resume_from_checkpoint true"
        )

    def release(self) -> None:
        if self.owner is not None and _read_owner(self.path) == self.owner:
            self.path.unlink()
        self.owner = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def require_lock(lock: RunLock, what_stops: str) -> None:
    """Raise a :class:`RunLockError` on every rank when the main process lost ``lock``."""
    message = decide_on_main(lambda: None if lock.still_held() else lock.lost_message(what_stops))
    if message is not None:
        raise RunLockError(message)


class LockGuard(TrainerCallback):
    """Check the run's lock at each step that is about to save a checkpoint; stop before the save when it is lost."""

    def __init__(self, lock: RunLock):
        self.lock = lock

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save:
            require_lock(self.lock, f"before saving checkpoint-{state.global_step}")
