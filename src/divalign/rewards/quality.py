"""A reward of the registry as the quality of sampled completions: the ``quality:`` of a recipe's ``diversity:``
block, next to the diversity curves of the training callback.

The value takes the forms a GRPO recipe's ``rewards:`` entries take, or a path:

    quality: toy_validity                           # a registry name, default settings
    quality: {math_answer: {answer_column: answer}} # a name and its settings
    quality: models/my_reward_model                 # a local reward-model directory (the `reward_model` reward)

The reward is called as TRL calls it (``prompts``, ``completions`` — chat messages for chat prompts —,
``completion_ids`` and the probe records' other fields as dataset columns, one value per completion) and scores each
sample. A verifier (a reward with ``binary = True``: ``math_answer``, ``toy_validity``, a one-check ``format``) gives
0/1 verdicts: a sample is correct when it scores 1. Another reward defines correctness only through a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .registry import REWARDS, RewardSpec, build, parse_reward

WHERE = "diversity.quality"
# Group-relative rewards: a sample's score depends on its rollout siblings, and scoring gathers across processes
GROUP_REWARDS = ("darling",)


def parse_quality(value: Any) -> RewardSpec:
    """The reward a ``quality:`` value names: a registry name, a one-key mapping ``{name: settings}``, or the path of
    a local reward-model directory. Errors name the key and what it accepts."""
    if isinstance(value, str) and value not in REWARDS:
        if Path(value).expanduser().is_dir():
            return RewardSpec("reward_model", {"model": value})
        raise ValueError(
            f"{WHERE}: {value!r} is neither a reward of the registry ({', '.join(REWARDS)}) nor a reward-model "
            "directory"
        )
    spec = parse_reward(value, WHERE)
    if spec.name in GROUP_REWARDS:
        raise ValueError(
            f"{WHERE}: {spec.name!r} scores a sample against its rollout group, not on its own; name its quality "
            f"reward instead (e.g. {spec.kwargs.get('quality', 'math_answer')!r})"
        )
    return spec


class Quality:
    """The per-sample quality of a ``quality:`` value (see :func:`parse_quality`).

    Args:
        value: the ``quality:`` value.
        correct_threshold: a sample scoring at least this is correct; ``None``: a verifier's verdict (score 1), and
            no correctness for other rewards.
    """

    def __init__(self, value: Any, correct_threshold: float | None = None) -> None:
        self.spec = parse_quality(value)
        self.reward = build(self.spec)
        self.correct_threshold = correct_threshold

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def binary(self) -> bool:
        """Whether the scores are 0/1 verdicts."""
        return bool(getattr(self.reward, "binary", False))

    @property
    def has_verdicts(self) -> bool:
        """Whether samples are correct or not: a verifier, or any reward with a ``correct_threshold``."""
        return self.binary or self.correct_threshold is not None

    def check_columns(self, columns: Sequence[Mapping[str, Any]], source: str) -> None:
        """Raise a ``ValueError`` naming ``source`` when a record lacks every column alternative the reward reads."""
        alternatives = self.reward.required_columns() if hasattr(self.reward, "required_columns") else [()]
        for index, record in enumerate(columns):
            if not any(set(option) <= set(record) for option in alternatives):
                wanted = " or ".join("+".join(repr(c) for c in option) for option in alternatives)
                raise ValueError(
                    f"{WHERE} {self.name!r} reads the column {wanted} of each probe prompt, but record {index} of "
                    f"{source} has only {sorted(record) or 'the prompt'}"
                )

    def score(
        self,
        prompts: Sequence[Any],
        groups: Sequence[Sequence[str]],
        token_ids: Sequence[Sequence[Sequence[int]]],
        columns: Sequence[Mapping[str, Any]],
    ) -> list[list[float]]:
        """Per prompt, the quality of each of its samples (NaN where the reward returns None), from one reward call
        over every sample."""
        rows = [(i, k) for i, group in enumerate(groups) for k in range(len(group))]
        chat = [not isinstance(prompts[i], str) for i, _ in rows]
        completions = [
            [{"role": "assistant", "content": groups[i][k]}] if is_chat else groups[i][k]
            for (i, k), is_chat in zip(rows, chat, strict=True)
        ]
        names = sorted({key for record in columns for key in record})
        extra = {name: [columns[i].get(name) for i, _ in rows] for name in names}
        scores = self.reward(
            prompts=[prompts[i] for i, _ in rows],
            completions=completions,
            completion_ids=[list(token_ids[i][k]) for i, k in rows],
            **extra,
        )
        out: list[list[float]] = [[] for _ in groups]
        for (i, _), value in zip(rows, scores, strict=True):
            out[i].append(math.nan if value is None else float(value))
        return out

    def verdicts(self, scores: Sequence[Sequence[float]]) -> list[list[bool]] | None:
        """Per sample, whether it is correct (see :attr:`has_verdicts`); ``None`` when correctness is not defined."""
        if not self.has_verdicts:
            return None
        threshold = self.correct_threshold if self.correct_threshold is not None else 1.0
        return [[not math.isnan(s) and s >= threshold for s in group] for group in scores]
