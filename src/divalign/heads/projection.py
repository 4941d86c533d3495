"""What every loss head shares: the projection through the LM head, the model's logit transform, the per-token
results, and the ZeRO-3 gathering of head tensors read directly.

The heads never call the LM head module (that would build the ``(tokens, vocab)`` logits); they multiply its weight
themselves, a block at a time, exactly as the model's own head would (docs/losses.md, "Precision").
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple

import torch

from .losses import upcast


class HeadOutput(NamedTuple):
    """Per-token results of the head, one entry per row of the hidden states given to it.

    Only ``loss`` carries a gradient. ``nll`` is ``−log p_y``, ``entropy`` is the entropy of ``p = softmax(z)``
    and ``is_top1`` tells whether the label is the model's most likely token; all are zero where the label is ignored.
    """

    loss: torch.Tensor
    nll: torch.Tensor
    entropy: torch.Tensor
    is_top1: torch.Tensor


class LogitTransform(NamedTuple):
    """How a model turns its head output into logits: ``softcap · tanh(scale · z / softcap)`` (Gemma-style)."""

    scale: float = 1.0
    softcap: float | None = None


PLAIN_LOGITS = LogitTransform()


def transform_logits(logits: torch.Tensor, transform: LogitTransform) -> torch.Tensor:
    """``logits`` scaled and soft-capped as ``transform`` says (not in place)."""
    if transform.scale != 1.0:
        logits = logits * transform.scale
    if transform.softcap is not None:
        logits = transform.softcap * torch.tanh(logits / transform.softcap)
    return logits


def project(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    compute_dtype: torch.dtype,
    transform: LogitTransform = PLAIN_LOGITS,
) -> torch.Tensor:
    """Logits of ``hidden @ weight.T + bias``, the matmul in ``compute_dtype`` as the model's own head runs it, then
    transformed in fp32 (float64 for a float64 ``compute_dtype``: see :func:`divalign.heads.losses.loss_dtype`)."""
    logits = hidden.to(compute_dtype) @ weight.to(compute_dtype).t()
    if bias is not None:
        logits = logits + bias.to(compute_dtype)
    return transform_logits(upcast(logits), transform)


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmuls run in: autocast's, when it is on, else the hidden states' own."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def gather_lm_head(*params: torch.Tensor | None) -> AbstractContextManager:
    """Gathers the ZeRO-3 shards of the head tensors read directly (weight, bias, LoRA up-projections); a null context
    when none is a ZeRO-3 parameter (docs/distributed.md)."""
    sharded = [p for p in params if p is not None and hasattr(p, "ds_id")]
    if not sharded:
        return nullcontext()
    from ..compat import gather_zero3_params

    return gather_zero3_params(*sharded)
