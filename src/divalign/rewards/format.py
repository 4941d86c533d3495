"""Format reward: does the completion present its answer the way the recipe asks (a ``\\boxed{}``, tagged sections)?

A small shaping term in the style of DeepSeek-R1's format reward (DeepSeek-AI, arXiv 2501.12948), which rewards
reasoning inside ``<think>`` tags, here generalised to a list of checks whose passed fraction is the reward.
"""

from __future__ import annotations

import re
from typing import Any

from .base import completion_text
from .math_answer import last_boxed


class FormatReward:
    """Fraction of format checks the completion passes, in [0, 1].

    Args:
        boxed: require a closed ``\\boxed{...}`` answer.
        tags: tag names that must each appear as a closed ``<tag>...</tag>`` pair, in this order.
        pattern: a regular expression the completion must contain (``re.search``, DOTALL).
    """

    __name__ = "format"

    def __init__(self, boxed: bool = True, tags: list[str] | None = None, pattern: str | None = None) -> None:
        self.boxed = bool(boxed)
        self.tags = list(tags or [])
        if isinstance(tags, str):
            raise ValueError(f"format.tags must be a list of tag names, got the string {tags!r}")
        try:
            self.pattern = re.compile(pattern, re.DOTALL) if pattern else None
        except re.error as error:
            raise ValueError(f"format.pattern {pattern!r} is not a valid regular expression: {error}") from error
        if not (self.boxed or self.tags or self.pattern):
            raise ValueError("format reward has no check: set boxed, tags or pattern")
        # The tags must open and close in order, each around some content
        body = r".*?".join(rf"<{re.escape(t)}>.*?</{re.escape(t)}>" for t in self.tags)
        self._tags = re.compile(body, re.DOTALL) if self.tags else None

    @property
    def binary(self) -> bool:
        """One check: the score is a 0/1 verdict; several: the fraction passed."""
        return self.boxed + bool(self.tags) + (self.pattern is not None) == 1

    def score(self, text: str) -> float:
        checks = []
        if self.boxed:
            checks.append(last_boxed(text) is not None)
        if self._tags is not None:
            checks.append(self._tags.search(text) is not None)
        if self.pattern is not None:
            checks.append(self.pattern.search(text) is not None)
        return sum(checks) / len(checks)

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return [self.score(completion_text(c)) for c in completions]
