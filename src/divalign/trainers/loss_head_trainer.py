"""SFT trainer whose per-token loss runs in divalign's chunked LM head (base of TOFU and GEM)."""

from __future__ import annotations

import torch
from accelerate.utils import is_peft_model
from trl import SFTTrainer

from ..compat import add_train_tokens, total_train_tokens, trainer_metrics, trl_lm_head_adapter_check_lifted
from ..heads.forward_patch import LossHeadOutput, add_loss_head
from ..heads.losses import LossSpec
from ..heads.operands import UnsupportedHeadError, resolve_head
from ..heads.registry import select_head
from .loss_head_config import LossHeadSFTConfig


class LossHeadSFTTrainer(SFTTrainer):
    """[`~trl.SFTTrainer`] whose loss is :meth:`loss_spec`, evaluated in one forward without full logits.

    `compute_loss` sums the per-token losses over trainable tokens and divides by `num_items_in_batch` (by their count
    when it is `None`), times the number of processes under `average_tokens_across_devices` — the reduction of TRL's
    `nll` loss (docs/losses.md, "The reduction, as TRL's SFT loss"), so gradient accumulation and data parallelism
    behave the same. It logs `nll`, `entropy`, `mean_token_accuracy` and `num_tokens` like TRL, from the same
    forward.

    PEFT on the LM head: LoRA (`lm_head` in `target_modules`), `modules_to_save: [lm_head]` and tied
    `trainable_token_indices` train exactly (:mod:`divalign.heads.operands`); other adapters on the head (DoRA, IA³, ...)
    are refused when the trainer is built.
    """

    args: LossHeadSFTConfig

    def __init__(self, *args, **kwargs):
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(f"{type(self).__name__} computes its own loss; `compute_loss_func` cannot be passed.")
        with trl_lm_head_adapter_check_lifted():
            super().__init__(*args, **kwargs)
        if not isinstance(self.args, LossHeadSFTConfig):
            raise TypeError(f"{type(self).__name__} needs a {LossHeadSFTConfig.__name__} subclass as `args`")
        base = self.model.get_base_model() if is_peft_model(self.model) else self.model
        try:  # refuse, before any training, a PEFT wrapper on the LM head the loss head cannot reproduce
            resolve_head(base.get_output_embeddings())
        except UnsupportedHeadError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from error
        head = select_head(self.args.loss_head, self.args.device)
        add_loss_head(base, self.loss_spec(), head=head, chunk_rows=self.args.loss_chunk_rows)

    def loss_spec(self) -> LossSpec:
        raise NotImplementedError(f"{type(self).__name__} must define loss_spec()")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs: LossHeadOutput = model(**inputs, loss_head=True)
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        # Clamped so that a batch without trainable tokens reduces to a finite zero rather than 0 / 0
        loss = outputs.per_token_loss.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every rank's tokens while DDP averages the gradients over ranks
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._record_head_metrics(mode, outputs)
        if mode == "train":
            self._count_train_tokens(inputs)
        trainer_metrics(self, mode)["num_tokens"] = [total_train_tokens(self)]
        if return_outputs:
            with torch.no_grad():
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            return loss, outputs
        return loss

    def _record_head_metrics(self, mode: str, outputs: LossHeadOutput) -> None:
        local = torch.stack(
            [
                outputs.label_mask.sum().float(),
                outputs.nll.detach().sum().float(),
                outputs.entropy.detach().sum().float(),
                outputs.is_top1.sum().float(),
            ]
        )
        # Sums over every rank's batch in one collective. Not `gather_for_metrics`: on the last batch of an epoch it
        # cuts what it gathers to the dataloader's remainder, which would drop whole sums (or part of this vector).
        num_valid, *sums = self.accelerator.reduce(local, reduction="sum").tolist()
        for name, total in zip(("nll", "entropy", "mean_token_accuracy"), sums, strict=True):
            trainer_metrics(self, mode)[name].append(total / num_valid if num_valid > 0 else 0.0)

    def _count_train_tokens(self, inputs: dict) -> None:
        if "attention_mask" in inputs:
            local = inputs["attention_mask"].sum()
        elif "position_ids" in inputs:  # padding-free batches carry no attention mask
            local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
        else:
            raise ValueError("Expected 'attention_mask' or 'position_ids' in the batch")
        # A sum over ranks, never cut to the dataloader's remainder (see _record_head_metrics)
        add_train_tokens(self, self.accelerator.reduce(local, reduction="sum").item() // self.get_tp_size())
