"""Rollout groups: the ``num_generations`` completions GRPO samples for one prompt, reassembled across processes.

TRL repeats each prompt ``num_generations`` times in a row and, after scoring, gathers the rewards of all processes
in rank order and reads consecutive blocks of ``num_generations`` rows as groups (``rewards.view(-1, G)``). A group
can therefore straddle two processes whenever a process's generation batch is not a multiple of ``G``. Anything
that needs a whole group (a group-relative reward, the diversity of a prompt's rollouts) all-gathers the rows in the
same rank order, cuts the same blocks, and each process keeps the slice of results for its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from accelerate import PartialState
from accelerate.utils import gather_object

T = TypeVar("T")


def gather_rows(local: Sequence[T]) -> tuple[list[T], int]:
    """All rows of every process in rank order, and where this process's rows start in that list.

    A collective call: every process must call it, the same number of times (TRL calls reward functions in lock-step).
    """
    counts = gather_object([len(local)])
    rows = gather_object(list(local))
    return rows, sum(counts[: PartialState().process_index])


def split_groups(rows: Sequence[T], group_size: int) -> list[list[T]]:
    """Consecutive blocks of ``group_size`` rows; a count that is not a multiple of it means the grouping is wrong."""
    if group_size < 1 or len(rows) % group_size:
        raise ValueError(
            f"{len(rows)} gathered completions do not split into groups of num_generations={group_size}; "
            "the completions of one prompt must be consecutive"
        )
    return [list(rows[i : i + group_size]) for i in range(0, len(rows), group_size)]


def check_group_prompts(prompts: Sequence[Any], group_size: int) -> None:
    """Raise when a block of ``group_size`` consecutive rows holds more than one prompt."""
    for index, group in enumerate(split_groups(list(prompts), group_size)):
        if any(p != group[0] for p in group[1:]):
            raise ValueError(f"rollout group {index} mixes prompts: the completions of one prompt must be consecutive")
