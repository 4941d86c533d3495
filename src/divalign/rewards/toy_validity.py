"""Toy-world validity reward: 1 when the completion is one of the prompt's valid answers, else 0.

The toy world (:mod:`divalign.toyworld.world`) knows every prompt's valid answers exactly, so validity is verifiable
without a judge. The GRPO rows written by :func:`divalign.toyworld.preference_data.grpo_records` carry them in a
``valid_answers`` column (a list of strings), which TRL hands to the reward next to each completion.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .base import ColumnVerdictReward

TOY_EOS = "<eos>"  # the toy tokenizer's EOS (divalign.toyworld.tokenizer.EOS), kept when a decoder keeps specials


def normalize_completion(text: str, eos_token: str | None = TOY_EOS) -> str:
    """The answer a completion gives: the text before the first EOS, with whitespace runs collapsed to one space.

    Generation stops at EOS, so anything after it is not part of the answer; the toy tokenizer is word level and
    decodes with spaces between tokens, so only the word sequence matters.
    """
    if eos_token:
        text = text.split(eos_token, 1)[0]
    return " ".join(text.split())


def is_valid(completion: str, valid_answers: Iterable[str], eos_token: str | None = TOY_EOS) -> bool:
    """Whether ``completion`` (text, EOS optional) is exactly one of ``valid_answers``."""
    answers = {normalize_completion(a, None) for a in valid_answers}
    return normalize_completion(completion, eos_token) in answers


def verify(completion: str, answer: str | None) -> bool:
    """``divalign eval --verifier divalign.rewards.toy_validity:verify``: ``answer`` is the JSON list of valid answers.

    `divalign eval` passes a prompt's ``answer`` field as a string, so the toy world's eval prompts store the list
    JSON-encoded there.
    """
    if answer is None:
        return False
    answers = json.loads(answer)
    if not isinstance(answers, list):
        raise ValueError(f"toy_validity.verify: `answer` must be a JSON list of valid answers, got {answer!r:.100}")
    return is_valid(completion, answers)


class ToyValidityReward(ColumnVerdictReward):
    """1.0 when the completion is one of the prompt's valid answers in the toy world's truth, else 0.0.

    Args:
        answers_column: the dataset column holding each prompt's valid answers (a list of strings).
        eos_token: EOS text cut off the completion when the decoder keeps special tokens; null to keep everything.
    """

    __name__ = "toy_validity"

    def __init__(self, answers_column: str = "valid_answers", eos_token: str | None = TOY_EOS) -> None:
        self.answers_column = answers_column
        self.eos_token = eos_token

    @property
    def column(self) -> str:
        return self.answers_column

    def judge(self, text: str, value: Any) -> bool:
        return is_valid(text, value, self.eos_token)

    def needs(self) -> str:
        return (
            f"toy_validity needs a dataset column {self.column!r} (the prompt's valid answers, as written "
            "by divalign.toyworld.preference_data)"
        )
