"""TOFU: tempered focal loss for diversity-preserving SFT."""

from __future__ import annotations

from ..heads.losses import LossSpec
from .loss_head_trainer import LossHeadSFTTrainer
from .tofu_config import TOFUConfig


class TOFUTrainer(LossHeadSFTTrainer):
    """[`~trl.SFTTrainer`] trained with the tempered focal loss (TOFU).

    Per token, `L = − sg(g(p_y, γ)) · β · log softmax(z / β)_y` with `g(p, γ) = (1 − p)^γ − γ p (1 − p)^(γ−1) log p`:
    rare targets get a large weight, learned ones almost none, and the tempered target keeps probability mass on
    alternatives. Klypa & Cherednichenko, "Diversity in Large Language Models under Supervised Fine-Tuning",
    arXiv:2605.00195.

    Takes the arguments of [`~trl.SFTTrainer`], with a [`TOFUConfig`] as `args`.
    """

    args: TOFUConfig

    def loss_spec(self) -> LossSpec:
        return LossSpec("tofu", beta=self.args.tofu_beta, gamma=self.args.tofu_gamma)
