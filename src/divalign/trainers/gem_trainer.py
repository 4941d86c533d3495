"""GEM: entropy-regularised distribution matching for diversity-preserving SFT."""

from __future__ import annotations

from ..heads.losses import LossSpec
from .gem_config import GEMConfig
from .loss_head_trainer import LossHeadSFTTrainer


class GEMTrainer(LossHeadSFTTrainer):
    """[`~trl.SFTTrainer`] trained with GEM.

    Per token, `L = Σ_v sg(q_v · w_v) · (log p_v − log p_y)` with `q = softmax(z / β)`: the gradient `q − e_y` (for
    `h="linear"`) pulls the model toward the data while the tempered `q` keeps entropy. The value can be negative;
    the logged `nll` shows fitting progress. Li et al., "Preserving Diversity in Supervised Fine-Tuning of Large
    Language Models", ICLR 2025, arXiv:2408.16673.

    Takes the arguments of [`~trl.SFTTrainer`], with a [`GEMConfig`] as `args`.
    """

    args: GEMConfig

    def loss_spec(self) -> LossSpec:
        return LossSpec("gem", beta=self.args.gem_beta, h=self.args.gem_h)
