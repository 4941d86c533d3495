"""Length penalty: a non-positive reward that grows with the completion's tokens beyond a target length.

Overlong completions are the usual failure of RL on verifiable rewards; DAPO (Yu et al., arXiv 2503.14476) shapes
them with a soft overlong penalty. This one is linear in the tokens over ``target_tokens``, capped at ``max_penalty``.
"""

from __future__ import annotations

from typing import Any


class LengthPenaltyReward:
    """``-min(max_penalty, scale * max(0, n - target_tokens) / target_tokens)`` for a completion of n tokens.

    Args:
        target_tokens: completions up to this many tokens are not penalised.
        scale: penalty per `target_tokens` tokens of excess (1.0: a completion twice the target gets -1).
        max_penalty: the cap of the penalty (its most negative value is `-max_penalty`).
    """

    __name__ = "length_penalty"

    def __init__(self, target_tokens: int = 512, scale: float = 1.0, max_penalty: float = 1.0) -> None:
        if isinstance(target_tokens, bool) or not isinstance(target_tokens, int) or target_tokens < 1:
            raise ValueError(f"length_penalty.target_tokens must be an integer >= 1, got {target_tokens!r}")
        if scale < 0 or max_penalty < 0:
            raise ValueError(f"length_penalty.scale and max_penalty must be >= 0, got {scale!r}, {max_penalty!r}")
        self.target_tokens = target_tokens
        self.scale = float(scale)
        self.max_penalty = float(max_penalty)

    def penalty(self, num_tokens: int) -> float:
        excess = max(0, num_tokens - self.target_tokens) / self.target_tokens
        return -min(self.max_penalty, self.scale * excess)

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any) -> list:
        if completion_ids is None:
            raise ValueError("length_penalty needs completion_ids (the policy's tokens), which TRL passes to rewards")
        return [self.penalty(len(ids)) for ids in completion_ids]
