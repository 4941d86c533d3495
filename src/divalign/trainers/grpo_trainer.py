"""GRPO with the diversity of every prompt's rollout group in the logs, at no extra generation.

GRPO (Shao et al., "DeepSeekMath", arXiv 2402.03300) samples ``num_generations`` completions per prompt to compute
group-relative advantages. Those groups are exactly what sampled-diversity metrics need (K samples per prompt), so
:class:`DivGRPOTrainer` scores them with :func:`divalign.diversity.compute_diversity` and logs
``diversity/rollout/<metric>`` next to TRL's reward metrics: a free collapse monitor for RL (Karouzos et al.,
arXiv 2604.16027, locate much of post-training's diversity loss in the RL stage).

One instrument with the probe-set callback and ``divalign eval``: the same metric code, K = the prompt's group, and
the same completion: its token ids cut before the first stop or pad token (TRL keeps the EOS in ``completion_ids``;
counted, it would be an n-gram of every sample) and its text decoded from those ids.
"""

from __future__ import annotations

from typing import Any

from accelerate.utils import broadcast_object_list
from trl import GRPOTrainer

from ..compat import check_grpo_reward_hook, trainer_metrics
from ..diversity import REGISTRY, compute_diversity, load_embedder
from ..generation import cut_at_stop, decode_group, stop_token_ids
from ..rewards.base import prompt_text
from ..rewards.groups import check_group_prompts, gather_rows, split_groups

ROLLOUT_PREFIX = "diversity/rollout/"


# The rollout metrics ride on TRL's private reward step: fail at import, naming it, if an upgrade moved it
check_grpo_reward_hook(GRPOTrainer)


class DivGRPOTrainer(GRPOTrainer):
    """[`~trl.GRPOTrainer`] that logs ``diversity/rollout/*`` for every generation batch.

    After TRL computes the rewards of a generation batch, the completions of all processes are gathered in rank
    order (the order in which TRL itself groups the gathered rewards), cut into groups of ``num_generations``, and
    scored on the main process; every process then logs the same values, so ``log_history`` agrees across ranks and
    a group split across processes is scored whole. Settings come from
    [`~divalign.trainers.grpo_config.DivGRPOConfig`] (`log_rollout_diversity`, `rollout_diversity_metrics`,
    `rollout_diversity_embedding_model`).
    """

    _rollout_embedder: Any = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if getattr(self.args, "log_rollout_diversity", False):
            self._log_rollout_diversity(prompts, completion_ids_list)
        return rewards_per_func

    def _group_size(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

    def _log_rollout_diversity(self, prompts: list, completion_ids: list) -> None:
        tokenizer = self._policy_tokenizer()
        ends = {*stop_token_ids(tokenizer, getattr(self.model, "generation_config", None))}
        if tokenizer.pad_token_id is not None:
            ends.add(tokenizer.pad_token_id)
        cut = [cut_at_stop([int(t) for t in ids], ends) for ids in completion_ids]
        texts = decode_group(tokenizer, cut)
        local = [(prompt_text(p), text, ids) for p, text, ids in zip(prompts, texts, cut, strict=True)]
        # gather_object: each process's rows whole and in rank order (no short-batch truncation), the order in which
        # TRL groups the gathered rewards; a collective every process makes once per generation batch
        rows, _ = gather_rows(local)
        metrics: dict[str, float] | None = None
        if self.accelerator.is_main_process:
            metrics = self.rollout_diversity(rows, self._group_size())
        (metrics,) = broadcast_object_list([metrics])
        mode = "train" if self.model.training else "eval"
        for key, value in metrics.items():
            trainer_metrics(self, mode)[f"{ROLLOUT_PREFIX}{key}"].append(float(value))

    def rollout_diversity(self, rows: list[tuple[str, str, list[int]]], group_size: int) -> dict[str, float]:
        """Diversity metrics of the rollout groups in ``rows`` (prompt, completion text, completion ids cut at the
        first stop token), K = ``group_size``: `<metric>` the mean over groups, `_p10`/`_p90`, `_across`."""
        check_group_prompts([row[0] for row in rows], group_size)
        groups = split_groups(rows, group_size)
        metrics = list(self.args.rollout_diversity_metrics)
        return compute_diversity(
            [[row[1] for row in group] for group in groups],
            [[row[2] for row in group] for group in groups],
            metrics=metrics,
            vocab_size=len(self._policy_tokenizer()),
            embedder=self._embedder(metrics),
            profile=self.args.rollout_diversity_profile,
        )

    def _policy_tokenizer(self) -> Any:
        return getattr(self.processing_class, "tokenizer", self.processing_class)

    def _embedder(self, metrics: list[str]) -> Any:
        if not any("embedder" in REGISTRY[name].needs for name in metrics):
            return None
        if self._rollout_embedder is None:
            self._rollout_embedder = load_embedder(self.args.rollout_diversity_embedding_model)
        return self._rollout_embedder
