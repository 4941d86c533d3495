"""Configuration of the TOFU SFT trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..heads.hyperparameters import require_exponent, require_temperature
from .loss_head_config import LossHeadSFTConfig


@dataclass
class TOFUConfig(LossHeadSFTConfig):
    r"""
    Configuration class for [`~divalign.trainers.tofu_trainer.TOFUTrainer`]: tempered focal loss.

    Klypa & Cherednichenko, "Diversity in Large Language Models under Supervised Fine-Tuning", arXiv:2605.00195.
    The defaults are the values the authors fix across all models and benchmarks. Every other parameter is
    [`~divalign.trainers.loss_head_config.LossHeadSFTConfig`]'s (the loss head) and [`~trl.SFTConfig`]'s.

    Parameters:
        > Parameters that control the loss (docs/losses.md)

        tofu_gamma (`float`, *optional*, defaults to `3.0`):
            Focusing exponent γ ≥ 0 of the token weight g(p, γ); 0 turns TOFU into GEM-linear.
        tofu_beta (`float`, *optional*, defaults to `0.8`):
            Temperature β > 0 of the tempered distribution softmax(z / β); 1 gives focal loss.
    """

    tofu_gamma: float = field(
        default=3.0,
        metadata={"help": "Focusing exponent γ ≥ 0 of the token weight g(p, γ); 0 turns TOFU into GEM-linear."},
    )
    tofu_beta: float = field(
        default=0.8,
        metadata={"help": "Temperature β > 0 of the tempered distribution softmax(z / β); 1 gives focal loss."},
    )

    def loss_keys(self) -> dict[str, Any]:
        """The run-config keys the dashboards group these runs by (:func:`divalign.dashboards.loss_config`)."""
        return {"loss": "tofu", "loss_gamma": self.tofu_gamma, "loss_beta": self.tofu_beta}

    def __post_init__(self):
        self.tofu_gamma = require_exponent("tofu_gamma", self.tofu_gamma)
        self.tofu_beta = require_temperature("tofu_beta", self.tofu_beta)
        super().__post_init__()
