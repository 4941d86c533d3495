"""Configuration of divalign's GRPO stage: TRL's GRPOConfig plus reward functions by name and rollout diversity."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import GRPOConfig

from ..diversity import DEFAULT_PROFILE, get_profile
from ..diversity.training_metrics import check_training_metrics
from ..rewards import parse_rewards

ROLLOUT_DIVERSITY_METRICS = ["distinct_1", "distinct_2", "distinct_3", "distinct_4", "ead", "exact_dup_rate"]


@dataclass
class DivGRPOConfig(GRPOConfig):
    r"""
    Configuration class for [`~divalign.trainers.grpo_trainer.DivGRPOTrainer`]: rewards named in the recipe,
    `diversity/rollout/*` logging.

    GRPO: Shao et al., "DeepSeekMath", arXiv 2402.03300. TRL's defaults are kept: `beta=0.0` (no KL term, so no
    reference model is loaded), `num_generations=8`, `loss_type="dapo"` (Yu et al., arXiv 2503.14476). Every other
    parameter is [`~trl.GRPOConfig`]'s.

    Parameters:
        > Parameters that control the rewards

        rewards (`list`, `str` or `dict`):
            Reward functions from `divalign.rewards.REWARDS`, in order: a list of names or one-key mappings
            `{name: {settings}}` (math_answer, format, length_penalty, reward_model, darling, toy_validity). Required.
            Weights go in `reward_weights`. On the command line: a JSON string or comma-separated names.

        > Parameters that control the rollout diversity

        log_rollout_diversity (`bool`, *optional*, defaults to `True`):
            Log `diversity/rollout/*`: diversity of each prompt's `num_generations` rollouts, computed from
            completions GRPO samples anyway (no extra generation).
        rollout_diversity_metrics (`list[str]`, *optional*, defaults to the token-level metrics
        `["distinct_1", "distinct_2", "distinct_3", "distinct_4", "ead", "exact_dup_rate"]`):
            Metrics of `divalign.diversity` for the rollout groups. Metrics that need a verifier or an NLI model are
            refused.
        rollout_diversity_embedding_model (`str` or `None`, *optional*, defaults to `None`):
            Sentence-embedding model for semantic rollout metrics (`sbert`, `vendi_1`); required by them.
        rollout_diversity_profile (`str`, *optional*, defaults to `"divalign"`):
            Metric conventions of the rollout metrics (`divalign`, `karouzos2026`, `tofu2026`; see
            `divalign.diversity.profile`); a training argument, so the run's W&B config names it.
    """

    rewards: list | str | dict | None = field(  # str second: HfArgumentParser types the flag by it
        default=None,
        metadata={
            "help": "Reward functions from `divalign.rewards.REWARDS`, in order: a list of names or one-key mappings "
            "`{name: {settings}}` (math_answer, format, length_penalty, reward_model, darling, toy_validity). Weights go in "
            "`reward_weights`. On the command line: a JSON string or comma-separated names."
        },
    )
    log_rollout_diversity: bool = field(
        default=True,
        metadata={
            "help": "Log `diversity/rollout/*`: diversity of each prompt's `num_generations` rollouts, computed from "
            "completions GRPO samples anyway (no extra generation)."
        },
    )
    rollout_diversity_metrics: list[str] = field(
        default_factory=lambda: list(ROLLOUT_DIVERSITY_METRICS),
        metadata={"help": "Metrics of `divalign.diversity` for the rollout groups; cheap token-level ones by default."},
    )
    rollout_diversity_embedding_model: str | None = field(
        default=None,
        metadata={
            "help": "Sentence-embedding model for semantic rollout metrics (`sbert`, `vendi_1`); none by default."
        },
    )
    rollout_diversity_profile: str = field(
        default=DEFAULT_PROFILE,
        metadata={
            "help": "Metric conventions of the rollout metrics (`divalign`, `karouzos2026`, `tofu2026`; see "
            "`divalign.diversity.profile`); a training argument, so the run's W&B config names it."
        },
    )

    def __post_init__(self) -> None:
        if self.rewards is None:
            raise ValueError("`rewards` is required: the reward functions, e.g. `rewards: [math_answer, format]`")
        if isinstance(self.rewards, str) and self.rewards.lstrip().startswith(("[", "{")):
            self.rewards = json.loads(self.rewards)
        self.reward_specs = parse_rewards(self.rewards)
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_specs):
            raise ValueError(
                f"`reward_weights` has {len(self.reward_weights)} weights for {len(self.reward_specs)} rewards "
                f"({', '.join(s.name for s in self.reward_specs)})"
            )
        self._check_rollout_metrics()
        super().__post_init__()

    def _check_rollout_metrics(self) -> None:
        get_profile(self.rollout_diversity_profile)  # an unknown name raises, listing the valid ones
        check_training_metrics(
            self.rollout_diversity_metrics,
            self.rollout_diversity_embedding_model,
            unknown="Unknown rollout_diversity_metrics {names}; valid metrics: {valid}",
            offline="rollout_diversity_metrics {names} need a verifier or an NLI model",
            semantic="rollout_diversity_metrics {names} need rollout_diversity_embedding_model",
        )
