"""Decisions about shared files, made once by the main process and handed to every rank.

Under ``accelerate launch`` every rank runs ``divalign.train``. Anything that moves or locks files in the output
directory must happen once, and every rank must then act on the same outcome — including the same error, or the ranks
that did not fail would wait forever at their next collective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from .recipe import RecipeError

T = TypeVar("T")


def decide_on_main(decide: Callable[[], T]) -> T:
    """Run ``decide`` on the main process only; return its result on every rank. When it raises, the main process
    raises that error and every other rank a :class:`~divalign.launch.recipe.RecipeError` with its message."""
    state = PartialState()
    if state.num_processes == 1:
        return decide()
    outcome: tuple[str, object] | None = None
    if state.is_main_process:
        try:
            outcome = ("result", decide())
        except Exception as error:
            broadcast_object_list([("error", str(error))])
            raise
    (outcome,) = broadcast_object_list([outcome])
    kind, value = outcome
    if kind == "error":
        raise RecipeError(value)
    return value
