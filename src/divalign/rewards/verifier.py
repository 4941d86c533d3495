"""A verifier as a GRPO reward: 1 when ``function(completion, answer)`` accepts the completion, else 0.

The same `MODULE:FUNCTION` that `divalign eval --verifier` and a compare spec's `evaluation.verifier` take (e.g.
``divalign.realworld.verifier:names_valid_item``), called with the completion's text and the prompt's value of the
dataset's `answer_column`, so RL rewards exactly what the evaluation counts as valid.
"""

from __future__ import annotations

from typing import Any

from ..user_code import load_callable
from .base import ColumnVerdictReward


class VerifierReward(ColumnVerdictReward):
    """1.0 when ``function(completion_text, answer)`` is true, else 0.0.

    Args:
        function: the verifier, as `MODULE:FUNCTION` (imported when the reward is built).
        answer_column: the dataset column holding each prompt's answer (what the verifier checks against).
    """

    __name__ = "verifier"

    def __init__(self, function: str, answer_column: str = "answer") -> None:
        if not isinstance(function, str) or ":" not in function:
            raise ValueError(f"rewards: verifier.function must be MODULE:FUNCTION, got {function!r}")
        self.function = function
        self.verify = load_callable(function, "rewards: verifier.function")
        self.answer_column = answer_column

    @property
    def column(self) -> str:
        return self.answer_column

    def judge(self, text: str, value: Any) -> bool:
        return self.verify(text, value)

    def needs(self) -> str:
        return f"the verifier reward ({self.function}) needs a dataset column {self.column!r} (each prompt's answer)"
