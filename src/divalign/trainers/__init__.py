"""The trainers: one config file and one trainer file per algorithm, as TRL lays them out.

- :mod:`~divalign.trainers.loss_head_config` / :mod:`~divalign.trainers.loss_head_trainer`: the SFT trainer whose
  per-token loss runs in divalign's LM head (:mod:`divalign.heads`), the base of TOFU and GEM;
- :mod:`~divalign.trainers.tofu_config` / :mod:`~divalign.trainers.tofu_trainer`: TOFU, the tempered focal loss;
- :mod:`~divalign.trainers.gem_config` / :mod:`~divalign.trainers.gem_trainer`: GEM, entropy-regularised
  distribution matching;
- :mod:`~divalign.trainers.grpo_config` / :mod:`~divalign.trainers.grpo_trainer`: GRPO with rewards by name and the
  diversity of its rollout groups in the logs.

Nothing is imported here: each module loads TRL when it is imported itself (``import divalign`` stays light).
"""
