"""Configuration of the GEM SFT trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..heads.hyperparameters import require_temperature
from ..heads.losses import GEM_WEIGHTINGS
from .loss_head_config import LossHeadSFTConfig


@dataclass
class GEMConfig(LossHeadSFTConfig):
    r"""
    Configuration class for [`~divalign.trainers.gem_trainer.GEMTrainer`]: entropy-regularised distribution matching.

    Li et al., "Preserving Diversity in Supervised Fine-Tuning of Large Language Models", ICLR 2025,
    arXiv:2408.16673. Every other parameter is [`~divalign.trainers.loss_head_config.LossHeadSFTConfig`]'s (the loss
    head) and [`~trl.SFTConfig`]'s.

    Parameters:
        > Parameters that control the loss (docs/losses.md)

        gem_beta (`float`, *optional*, defaults to `0.7`):
            Temperature β > 0 of the target distribution softmax(z / β); 1 gives the CE gradient.
        gem_h (`str`, *optional*, defaults to `"linear"`):
            Weighting h: `"linear"` (the paper's default) or `"logsigmoid"` (the authors' training scripts).
    """

    gem_beta: float = field(
        default=0.7,
        metadata={"help": "Temperature β > 0 of the target distribution softmax(z / β); 1 gives the CE gradient."},
    )
    gem_h: str = field(
        default="linear",
        metadata={
            "help": "Weighting h: 'linear' (the paper's default) or 'logsigmoid' (the authors' training scripts).",
            "choices": list(GEM_WEIGHTINGS),
        },
    )

    def loss_keys(self) -> dict[str, Any]:
        """The run-config keys the dashboards group these runs by (:func:`divalign.dashboards.loss_config`)."""
        return {"loss": "gem", "loss_beta": self.gem_beta, "loss_h": self.gem_h}

    def __post_init__(self):
        self.gem_beta = require_temperature("gem_beta", self.gem_beta)
        if self.gem_h not in GEM_WEIGHTINGS:
            raise ValueError(f"`gem_h` must be one of {GEM_WEIGHTINGS}, got {self.gem_h!r}")
        super().__post_init__()
