"""Reward functions for GRPO recipes, by name: the recipe's ``rewards:`` key lists them (with their settings).

    rewards:
      - math_answer                       # a name alone: default settings
      - format: {boxed: true}             # a one-key mapping: name and its settings
      - length_penalty: {target_tokens: 400}
    reward_weights: [1.0, 0.2, 0.5]       # TRL's own key, one weight per reward, in the same order

Each reward follows TRL's reward-function signature (see :class:`~divalign.rewards.base.RewardFunc`) and can be used
without a recipe: ``build("math_answer")`` or ``build({"darling": {"quality": "math_answer"}}, num_generations=8)``.
"""

from .base import RewardFunc, completion_text
from .registry import REWARDS, RewardSpec, build, build_all, parse_rewards, required_columns

__all__ = [
    "REWARDS",
    "RewardFunc",
    "RewardSpec",
    "build",
    "build_all",
    "completion_text",
    "parse_rewards",
    "required_columns",
]
