"""GRPO's rollout diversity follows `rollout_diversity_profile`, a training argument (so the W&B config names it)."""

from types import SimpleNamespace

import pytest

from divalign.trainers.grpo_config import DivGRPOConfig
from divalign.trainers.grpo_trainer import DivGRPOTrainer


def test_rollout_profile_is_a_validated_training_argument(tmp_path):
    config = DivGRPOConfig(output_dir=str(tmp_path), rewards=["length_penalty"], use_cpu=True)
    assert config.rollout_diversity_profile == "divalign"
    assert config.to_dict()["rollout_diversity_profile"] == "divalign"  # what the W&B integration logs as config
    with pytest.raises(ValueError, match=r"Unknown metric profile 'paper'; valid profiles: divalign"):
        DivGRPOConfig(output_dir=str(tmp_path), rewards=["length_penalty"], rollout_diversity_profile="paper")


def test_rollout_metrics_are_scored_with_the_profile():
    """One group of two rollouts, "a b a." and "a c", V = 10: the karouzos2026 EAD counts words, the empty orders 4
    and 5 as 0 and clamps order 2 at 1: (3 / (10 (1 − 0.9^5)) + 1 + 1) / 5; divalign's counts the token ids."""
    rows = [("say", "a b a.", [1, 2, 1, 4]), ("say", "a c", [1, 3])]

    def scored(profile: str) -> dict[str, float]:
        trainer = SimpleNamespace(
            args=SimpleNamespace(rollout_diversity_metrics=["ead"], rollout_diversity_profile=profile),
            _policy_tokenizer=lambda: range(10),
            _embedder=lambda metrics: None,
        )
        return DivGRPOTrainer.rollout_diversity(trainer, rows, 2)

    assert scored("karouzos2026")["ead"] == pytest.approx((3 / (10 * (1 - 0.9**5)) + 1 + 1) / 5)
    # token ids [1 2 1 4], [1 3]: n = 1: 4 distinct of 6; n = 2: 4 of 4; n = 3: 2 of 2; n = 4: 1 of 1; n = 5: none,
    # left out of the mean; nothing clamped
    by_ids = [4 / (10 * (1 - 0.9**6)), 4 / (10 * (1 - 0.9**4)), 2 / (10 * (1 - 0.9**2)), 1 / (10 * (1 - 0.9))]
    assert scored("divalign")["ead"] == pytest.approx(sum(by_ids) / 4)
