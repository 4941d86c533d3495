"""What every divalign reward shares: TRL's reward-function signature and the completion's text."""

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
