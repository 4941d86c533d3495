"""What every divalign reward shares: TRL's reward-function signature and the completion's text; what the 0/1
verifier rewards share: a verdict per completion against its prompt's value of one dataset column."""

from __future__ import annotations

from typing import Any, Protocol


class RewardFunc(Protocol):
    """A TRL GRPO reward function (TRL >= 1.16).

    Called once per generation batch on every process with ``prompts``, ``completions`` (strings, or lists of chat
    messages for conversational datasets), ``completion_ids``, ``trainer_state``, ``log_metric``, ``log_extra`` and the
    dataset's other columns (one value per completion) as keyword arguments; returns one float per completion, or None
    where the reward does not apply. The `__name__` names the `rewards/<name>/mean` log keys. A reward whose scores
    are 0/1 verdicts (a verifier) says so with ``binary = True``: as a quality it then defines which samples are
    correct.
    """

    __name__: str

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]: ...


def completion_text(completion: Any) -> str:
    """The text of one completion: the string itself, or the joined contents of its assistant messages."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, list):  # content blocks: keep the text parts
            content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        parts.append(str(content))
    return "\n".join(parts)


def prompt_text(prompt: Any) -> str:
    """A hashable rendering of one prompt (string, or chat messages), to recognise a prompt's group."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in prompt)


class ColumnVerdictReward:
    """1.0 when :meth:`judge` accepts a completion's text against its prompt's value of the dataset column
    ``column``, else 0.0 (a verifier's reward). A subclass names ``column`` (a property over its own public
    option) and ``__name__``, and says in :meth:`needs` what the column holds."""

    __name__: str
    binary = True  # 0/1 verdicts: a sample is correct or not (pass@k, correct-only diversity)
    column: str

    def judge(self, text: str, value: Any) -> bool:
        raise NotImplementedError

    def needs(self) -> str:
        """The error's start when the column is missing: who needs it and what it holds."""
        raise NotImplementedError

    def required_columns(self) -> list[tuple[str, ...]]:
        return [(self.column,)]

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        if self.column not in kwargs:
            raise ValueError(f"{self.needs()}; got {sorted(kwargs)}")
        values = kwargs[self.column]
        return [float(bool(self.judge(completion_text(c), v))) for c, v in zip(completions, values, strict=True)]
