"""Patch a causal LM's forward so one call returns a per-token diversity loss without full logits.

The loss head runs *inside* the model's forward: DDP's gradient synchronisation and DeepSpeed ZeRO-3's parameter
hooks only work on computation that happens within the wrapped module's forward (docs/distributed.md), the same
reason TRL's ``add_fused_lm_head`` patches the forward.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .chunked import chunked_head_loss
from .losses import IGNORE_INDEX
from .operands import resolve_head
from .projection import HeadOutput, LogitTransform, gather_lm_head

HeadFunction = Callable[..., HeadOutput]


@dataclass
class LossHeadOutput(ModelOutput):
    """Per-token results of ``model(..., loss_head=True)``, each ``(batch, seq_len - 1)``, zero where ignored.

    Args:
        per_token_loss: the diversity loss of each next-token label (differentiable).
        nll: ``−log p`` of each label. entropy: entropy of the next-token distribution.
        is_top1: whether the label is the most likely token. label_mask: whether the label is not ``-100``.
    """

    per_token_loss: torch.Tensor | None = None
    nll: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    is_top1: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None


def _logit_scale(config) -> float:
    """The factor a model multiplies its head output by, from whichever config key its family uses."""
    for key in ("logit_scale", "output_multiplier", "lm_head_multiplier"):  # Cohere; Muse Glimmer; Falcon-H1
        if getattr(config, key, None) is not None:
            return float(getattr(config, key))
    divisor = getattr(config, "logits_scaling", None)  # Granite, MiniCPM3 divide by it; HyperCLOVA X multiplies
    if divisor is not None:
        return float(divisor) if config.model_type == "hyperclovax" else 1.0 / float(divisor)
    return 1.0


def logit_transform(model: PreTrainedModel) -> LogitTransform:
    """The scale and soft-cap a model applies to its head output (Cohere's logit scale, Granite's logit divisor,
    Gemma-2/3 final soft-capping), read from the same config keys as TRL's fused LM head (docs/losses.md, "Logit
    transforms")."""
    config = model.config.get_text_config()
    return LogitTransform(scale=_logit_scale(config), softcap=getattr(config, "final_logit_softcapping", None))


def _next_token_view(
    hidden: torch.Tensor, labels: torch.Tensor | None, shift_labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if shift_labels is not None:  # already aligned (context / sequence parallelism)
        return hidden, shift_labels
    if labels is None:
        raise ValueError("loss_head=True needs `labels` (or `shift_labels`) in the model inputs")
    return hidden[:, :-1], labels[:, 1:]


def add_loss_head(
    model: PreTrainedModel,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    head: HeadFunction = chunked_head_loss,
    chunk_rows: int | None = None,
) -> None:
    """Make ``model(..., labels=labels, loss_head=True)`` return a :class:`LossHeadOutput`.

    Without ``loss_head=True`` the previous forward (possibly TRL's fused-head forward) runs unchanged, so generation
    and TRL's own code paths are untouched. Apply to the base model before PEFT wraps it, or to
    ``peft_model.get_base_model()``; PEFT adapters on the LM head are resolved on every call
    (:func:`divalign.heads.operands.resolve_head`).
    """
    previous_forward = model.forward
    transform = logit_transform(model)

    @functools.wraps(type(model).forward)
    def forward(self, *args, loss_head: bool = False, labels=None, shift_labels=None, **kwargs):
        if not loss_head:
            if shift_labels is not None:
                kwargs["shift_labels"] = shift_labels
            return previous_forward(*args, labels=labels, **kwargs)
        kwargs.pop("num_items_in_batch", None)
        kwargs["use_cache"] = False
        # Looked up per call: PEFT, DeepSpeed and FSDP replace modules after patching
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        hidden, targets = _next_token_view(hidden, labels, shift_labels)
        operands = resolve_head(self.get_output_embeddings())  # PEFT wrappers resolved (LoRA as extra columns)
        device = operands.weight.device
        hidden, targets = hidden.to(device), targets.to(device)
        with gather_lm_head(*operands.parameters()):
            hidden, weight, bias = operands.project_inputs(hidden)
            out = head(hidden, weight, bias, targets, loss_fn, chunk_rows, transform)
        shape = targets.shape
        return LossHeadOutput(
            per_token_loss=out.loss.view(shape),
            nll=out.nll.view(shape),
            entropy=out.entropy.view(shape),
            is_top1=out.is_top1.view(shape),
            label_mask=targets != IGNORE_INDEX,
        )

    model.forward = types.MethodType(forward, model)
