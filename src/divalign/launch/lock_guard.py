"""Stop a run whose output-directory lock was deleted or taken over while it trained, before it writes again.

Deleting ``.divalign_lock`` (by hand, or a cleanup script) lets a second run take the directory; from then on two runs
would save checkpoints, the resolved recipe and the final model into one place. The running one checks its lock
before each save — a checkpoint, and the final model — and stops without writing when the lock no longer holds its
record, so its newest checkpoint stays as it was. Under a distributed launch the main process, which holds the lock,
decides for every rank (:mod:`divalign.launch.main_process`).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from .main_process import decide_on_main
from .run_lock import RunLock, RunLockError


def require_lock(lock: RunLock, what_stops: str) -> None:
    """Raise a :class:`~divalign.launch.run_lock.RunLockError` on every rank when the main process lost ``lock``."""
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
