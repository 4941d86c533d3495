"""A reward of the registry as the quality of sampled completions: the one scorer behind the ``quality:`` of a
recipe's ``diversity:`` block (the training callback) and ``divalign eval --quality`` (the frontier).

The value takes the forms a GRPO recipe's ``rewards:`` entries take, or names a reward model:

    quality: toy_validity                           # a registry name, default settings
    quality: {math_answer: {answer_column: answer}} # a name and its settings
    quality: reward_model:models/my_rm              # a sequence-classification checkpoint (the `reward_model` reward)
    quality: models/my_rm                           # the same, as a local directory

The reward is called as TRL calls it (``prompts``, ``completions``, ``completion_ids`` and the prompt records' other
fields as dataset columns, one value per completion) and scores each sample. When the policy read its prompts
through a chat template, the reward sees the conversation the policy took part in: a plain prompt is one user turn,
each completion one assistant turn (a reward model then renders it with its own chat template). A verifier (a reward
with ``binary = True``: ``math_answer``, ``toy_validity``, a one-check ``format``) gives 0/1 verdicts: a sample is
correct when it scores 1. Another reward defines correctness only through a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .registry import REWARDS, RewardSpec, build, parse_reward

WHERE = "diversity.quality"
REWARD_MODEL_PREFIX = "reward_model:"
# What the reward call passes itself: a prompt record's field of the same name is never a dataset column
_CALL_ARGUMENTS = ("prompts", "completions", "completion_ids")
# Group-relative rewards: a sample's score depends on its rollout siblings, and scoring gathers across processes
GROUP_REWARDS = ("darling",)


def parse_quality(value: Any, where: str = WHERE) -> RewardSpec:
    """The reward a quality value names: a registry name, a one-key mapping ``{name: settings}``,
    ``reward_model:PATH`` or the path of a local reward-model directory. Errors start with ``where`` (the recipe key
    or flag) and say what it accepts."""
    if isinstance(value, str) and value not in REWARDS:
        value = _reward_model_entry(value, where)
    spec = parse_reward(value, where)
    if spec.name in GROUP_REWARDS:
        raise ValueError(
            f"{where}: {spec.name!r} scores a sample against its rollout group (its quality times the sample's "
            "distinctness within the group), not on its own, and diversity is what the quality is set against; name "
            f"its quality reward instead (e.g. {spec.kwargs.get('quality', 'math_answer')!r})"
        )
    return spec


def _reward_model_entry(value: str, where: str) -> dict[str, Any]:
    """``reward_model:PATH`` or a directory as the registry entry of the reward model."""
    name, sep, argument = value.partition(":")
    if value.startswith(REWARD_MODEL_PREFIX) and argument:
        return {"reward_model": {"model": argument}}
    if sep and name in REWARDS:
        raise ValueError(
            f"{where}: only reward_model takes an argument after ':' (its checkpoint); settings of {name!r} go in a "
            f"mapping {{{name}: {{...}}}}"
        )
    if Path(value).expanduser().is_dir():
        return {"reward_model": {"model": value}}
    raise ValueError(
        f"{where}: {value!r} is neither a reward of the registry ({', '.join(REWARDS)}), reward_model:PATH nor a "
        "reward-model directory"
    )


class Quality:
    """The per-sample quality of a ``quality:`` value (see :func:`parse_quality`).

    Args:
        value: the ``quality:`` value.
        correct_threshold: a sample scoring at least this is correct; ``None``: a verifier's verdict (score 1), and
            no correctness for other rewards.
    """

    def __init__(self, value: Any, correct_threshold: float | None = None, where: str = WHERE) -> None:
        self.spec = parse_quality(value, where)
        self.reward = build(self.spec)
        self.correct_threshold = correct_threshold
        self.where = where

    def load(self) -> None:
        """Load what the reward needs now (a reward model's weights), so a bad checkpoint fails before sampling."""
        if hasattr(self.reward, "load"):
            try:
                self.reward.load()
            except (OSError, ValueError) as err:
                raise ValueError(f"{self.where}: cannot load a sequence-classification model ({err})") from err

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
                    f"{self.where}: {self.name!r} reads the column {wanted} of each prompt, but record {index} of "
                    f"{source} has only {sorted(record) or 'the prompt'}"
                )

    def score(
        self,
        prompts: Sequence[Any],
        groups: Sequence[Sequence[str]],
        token_ids: Sequence[Sequence[Sequence[int]]],
        columns: Sequence[Mapping[str, Any]],
        chat: bool = True,
    ) -> list[list[float]]:
        """Per prompt, the quality of each of its samples (NaN where the reward returns None), from one reward call
        over every sample. ``chat``: the policy read its prompts through a chat template, so a plain prompt was a
        user turn (chat-message prompts always are a conversation)."""
        rows = [(i, k) for i, group in enumerate(groups) for k in range(len(group))]
        conversation = [_as_conversation(prompt, chat) for prompt in prompts]
        completions = [
            [{"role": "assistant", "content": groups[i][k]}] if conversation[i] is not None else groups[i][k]
            for i, k in rows
        ]
        names = sorted({key for record in columns for key in record} - set(_CALL_ARGUMENTS))
        extra = {name: [columns[i].get(name) for i, _ in rows] for name in names}
        scores = self.reward(
            prompts=[prompts[i] if conversation[i] is None else conversation[i] for i, _ in rows],
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


def _as_conversation(prompt: Any, chat: bool) -> list[dict[str, Any]] | None:
    """The prompt as the messages the policy answered (a plain prompt under a chat template is one user turn), or
    ``None`` for a plain-text prompt read as it is."""
    if not isinstance(prompt, str):
        return list(prompt)
    return [{"role": "user", "content": prompt}] if chat else None
