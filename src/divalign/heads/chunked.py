"""Chunked LM head: any per-token loss over the vocabulary without the ``(tokens, vocab)`` logits.

The hidden states of the trainable tokens are projected through the LM head a chunk of rows at a time. The forward
keeps only per-token results; the backward recomputes each chunk's logits and takes that chunk's gradient, so peak
memory holds one ``(chunk, vocab)`` block, never the whole ``(tokens, vocab)`` tensor. This is the plain PyTorch path
(the reference for the tiled heads in :mod:`divalign.heads.tiled`, and the CPU path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .losses import IGNORE_INDEX, loss_dtype
from .projection import PLAIN_LOGITS, HeadOutput, LogitTransform, compute_dtype, gather_lm_head, project

PerTokenLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# One fp32 (rows, vocab) block of this many elements (128 MiB) per chunk: a few such blocks live at once inside a loss
DEFAULT_CHUNK_ELEMENTS = 2**25
MIN_CHUNK_ROWS = 16


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so that one fp32 ``(rows, vocab)`` block stays near :data:`DEFAULT_CHUNK_ELEMENTS`."""
    return max(MIN_CHUNK_ROWS, DEFAULT_CHUNK_ELEMENTS // max(vocab_size, 1))


def token_statistics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(nll, entropy, is_top1)`` of upcast logits rows; zero where the label is ignored."""
    mask = labels != IGNORE_INDEX
    safe_labels = torch.where(mask, labels, torch.zeros_like(labels))
    log_p = torch.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    is_top1 = logits.argmax(-1) == safe_labels
    zero = torch.zeros_like(nll)
    return torch.where(mask, nll, zero), torch.where(mask, entropy, zero), is_top1 & mask


class _ChunkedHeadFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, loss_fn, chunk_rows, transform):
        dtype = compute_dtype(hidden)
        pieces = []
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                logits = project(hidden[rows], weight, bias, dtype, transform)
                pieces.append((loss_fn(logits, labels[rows]), *token_statistics(logits, labels[rows])))
        if not pieces:  # no trainable row: empty results that still take part in the graph
            empty = hidden.new_zeros(0, dtype=loss_dtype(dtype))
            pieces.append((empty, empty, empty, empty.bool()))
        loss, nll, entropy, is_top1 = (torch.cat(column) for column in zip(*pieces, strict=True))
        ctx.save_for_backward(hidden, weight, bias, labels)
        ctx.loss_fn, ctx.chunk_rows, ctx.transform, ctx.compute_dtype = loss_fn, chunk_rows, transform, dtype
        ctx.mark_non_differentiable(nll, entropy, is_top1)
        return loss, nll, entropy, is_top1

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        hidden, weight, bias, labels = ctx.saved_tensors
        wants = ctx.needs_input_grad[:3]
        grads = [None, None, None]
        if grad_loss is None or not any(wants):
            return (*grads, None, None, None, None)
        with gather_lm_head(weight, bias), torch.autocast(hidden.device.type, enabled=False):
            leaves = [
                weight.detach().requires_grad_(wants[1]),
                None if bias is None else bias.detach().requires_grad_(wants[2]),
            ]
            grad_hidden = torch.empty_like(hidden) if wants[0] else None
            # Summing the chunks' head gradients in fp32 (float64 heads: float64) keeps bf16 heads from losing small terms
            sum_dtype = loss_dtype(ctx.compute_dtype)
            head_sums = [
                torch.zeros_like(t, dtype=sum_dtype) if t is not None and t.requires_grad else None for t in leaves
            ]
            for start in range(0, hidden.shape[0], ctx.chunk_rows):
                rows = slice(start, start + ctx.chunk_rows)
                chunk = hidden[rows].detach().requires_grad_(wants[0])
                with torch.enable_grad():
                    logits = project(chunk, leaves[0], leaves[1], ctx.compute_dtype, ctx.transform)
                    loss = ctx.loss_fn(logits, labels[rows])
                targets = [t for t in (chunk, *leaves) if t is not None and t.requires_grad]
                chunk_grads = iter(torch.autograd.grad(loss, targets, grad_outputs=grad_loss[rows]))
                if wants[0]:
                    grad_hidden[rows] = next(chunk_grads)
                for total in head_sums:
                    if total is not None:
                        total.add_(next(chunk_grads))
            grads[0] = grad_hidden
            for index, (total, leaf) in enumerate(zip(head_sums, leaves, strict=True), start=1):
                if total is not None:
                    grads[index] = total.to(leaf.dtype)
        return (*grads, None, None, None, None)


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    loss_fn: PerTokenLoss,
    chunk_rows: int | None = None,
    transform: LogitTransform = PLAIN_LOGITS,
) -> HeadOutput:
    """Evaluate ``loss_fn(logits, labels)`` per token for ``logits = hidden @ weight.T (+ bias)``, chunk by chunk.

    Args:
        hidden: ``(N, H)`` hidden states (any leading shape is flattened).
        weight: ``(V, H)`` LM-head weight. Under ZeRO-3 call this inside the model's forward with the head gathered.
        bias: ``(V,)`` head bias or ``None``.
        labels: ``(N,)`` target ids; rows labelled ``-100`` are skipped (zero loss, zero gradient).
        loss_fn: per-token loss on a ``(n, V)`` fp32 logits block and its ``(n,)`` labels, e.g.
            :func:`divalign.heads.losses.tofu_per_token`.
        chunk_rows: rows per chunk; by default :func:`default_chunk_rows` of the vocabulary size.
        transform: logit scale and soft-capping the model applies after its head.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    mask = labels != IGNORE_INDEX
    rows = chunk_rows or default_chunk_rows(weight.shape[0])
    if rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of token rows, got {chunk_rows}")
    compact = _ChunkedHeadFunction.apply(hidden[mask], weight, bias, labels[mask], loss_fn, rows, transform)
    # masked_scatter keeps the loss connected to the graph even when no row is trainable
    return HeadOutput(*(t.new_zeros(mask.shape).masked_scatter(mask, t) for t in compact))
