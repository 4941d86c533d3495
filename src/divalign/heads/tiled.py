"""The vocabulary-tiled LM head for CE, TOFU and GEM: the autograd Function and the :class:`TileBackend` interface.

:func:`divalign.heads.chunked.chunked_head_loss` (the reference) builds each chunk's full ``(rows, vocab)`` fp32
logits and lets autograd differentiate the per-token loss. Every loss here only needs, per token row, a handful of
sums over the vocabulary (docs/losses.md, "One head for both"), so the tiled head walks the vocabulary one tile of
columns at a time and keeps per-row running accumulators relative to a running maximum (online log-sum-exp):

- ``m = max z`` and its first index (``is_top1``), ``z_y``;
- ``S = Σ e^(z−m)`` and ``T = Σ e^(z−m)(z−m)``: ``lse(z) = m + log S``, entropy ``H(p) = log S − T/S``;
- ``S_β = Σ e^((z−m)/β)`` (``lse(z/β)``) and ``U_β = Σ e^((z−m)/β)(z−m)`` (``Σ_v q_v z_v`` for GEM's value);
- GEM-logsigmoid: ``A_β = Σ e^((z−m)/β) w`` and ``B_β = Σ e^((z−m)/β) w (z − z_y)``, ``w = σ(0.01 (z − z_y))``
  detached; ``z_y`` is computed first with a gathered dot product because ``w`` depends on it.

With ``q = softmax(z/β)`` the gradients w.r.t. the logits are all ``c · (q ⊙ w − A · e_y)``:

- CE: ``p − e_y``;
- TOFU: ``g(p_y, γ) · (q − e_y)`` (Klypa & Cherednichenko, arXiv:2605.00195);
- GEM-linear: ``q − e_y``; GEM-logsigmoid: ``q ⊙ w − (Σ_v q_v w_v) · e_y`` (Li et al., ICLR 2025, arXiv:2408.16673).

The backward therefore recomputes one logits tile at a time, turns it into its gradient in place and feeds the two
matmuls of the head's backward (fp32 accumulation), so no ``(rows, vocab)`` block ever exists. A float64 head (hidden
states and weight) is computed and accumulated in float64 throughout, like :func:`divalign.heads.losses.loss_dtype`.

This module holds what every backend shares: the row chunking, the per-row statistics saved for the backward, the
final per-token values (:func:`finish_rows`), the fp32 gradient accumulation and the masking. A backend folds one
row chunk's tiles forward and yields its gradient tiles backward: :mod:`divalign.heads.torch_tiles` in plain PyTorch
(the tested path, CPU and CUDA), :mod:`divalign.heads.triton_tiles` with Triton kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

from .losses import IGNORE_INDEX, LossSpec, loss_dtype, tofu_focal_weight, upcast
from .projection import PLAIN_LOGITS, HeadOutput, LogitTransform, compute_dtype, gather_lm_head, transform_logits

# Rows per chunk: all of them up to this, so each weight tile's gradient is written once (no fp32 (V, H) accumulator)
DEFAULT_FUSED_ROWS = 16_384
TILE_ALIGN = 128


class RowStats(NamedTuple):
    """Online accumulators of one row chunk, relative to the running row maximum ``m`` (``None`` = not needed)."""

    m: torch.Tensor
    argmax: torch.Tensor
    z_y: torch.Tensor
    s_p: torch.Tensor
    t_p: torch.Tensor
    s_q: torch.Tensor | None
    u_q: torch.Tensor | None
    a_q: torch.Tensor | None
    b_q: torch.Tensor | None


class RowResult(NamedTuple):
    """Per-row outputs of the forward and what the backward needs to rebuild each tile's gradient."""

    loss: torch.Tensor
    nll: torch.Tensor
    entropy: torch.Tensor
    is_top1: torch.Tensor
    q_shift: torch.Tensor  # m + β log S_β, so that q_v = exp((z_v − q_shift) / β)
    coef: torch.Tensor  # c: TOFU's g(p_y, γ), else 1
    target_mass: torch.Tensor  # A: Σ q_v w_v for GEM-logsigmoid, else 1


def validate_spec(spec: LossSpec) -> None:
    """Raise a ``ValueError`` for a loss the tiled head does not implement."""
    if spec.name not in ("ce", "tofu", "gem"):
        raise ValueError(f"unknown loss {spec.name!r}; expected 'ce', 'tofu' or 'gem'")
    if spec.name == "gem" and spec.h not in ("linear", "logsigmoid"):
        raise ValueError(f"gem h must be 'linear' or 'logsigmoid', got {spec.h!r}")
    if spec.name != "ce" and not spec.beta > 0:
        raise ValueError(f"beta must be positive, got {spec.beta}")


def loss_beta(spec: LossSpec) -> float:
    """The temperature of the tempered distribution ``q``: β, or 1 for CE (``q = p``)."""
    return 1.0 if spec.name == "ce" else float(spec.beta)


def is_logsigmoid(spec: LossSpec) -> bool:
    """Whether the loss weighs the vocabulary with GEM-logsigmoid's ``w``, which needs ``z_y`` before the tiles."""
    return spec.name == "gem" and spec.h == "logsigmoid"


def default_tile_cols(rows: int, vocab_size: int, elements: int) -> int:
    """Vocabulary columns per tile so that one ``(rows, tile)`` block stays near ``elements`` (the backend's
    :attr:`TileBackend.tile_elements`)."""
    cols = max(TILE_ALIGN, (elements // max(rows, 1)) // TILE_ALIGN * TILE_ALIGN)
    return min(cols, max(vocab_size, 1))


def target_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    compute_dtype: torch.dtype,
    transform: LogitTransform = PLAIN_LOGITS,
) -> torch.Tensor:
    """fp32 ``z_y`` per row from a gathered dot product (labels must be valid ids), transformed like the logits."""
    rows = weight[labels].to(compute_dtype)
    z = torch.bmm(hidden.to(compute_dtype).unsqueeze(1), rows.unsqueeze(2)).squeeze(-1).squeeze(-1)
    if bias is not None:
        z = z + bias[labels].to(compute_dtype)
    return transform_logits(upcast(z), transform)


def finish_rows(stats: RowStats, labels: torch.Tensor, spec: LossSpec, z_y_w: torch.Tensor | None) -> RowResult:
    """Per-token loss, statistics and backward coefficients from a row chunk's accumulators over the whole vocab."""
    beta = loss_beta(spec)
    log_s = stats.s_p.log()
    nll = stats.m + log_s - stats.z_y
    entropy = log_s - stats.t_p / stats.s_p
    is_top1 = stats.argmax == labels
    one = torch.ones_like(nll)
    if spec.name == "ce":
        return RowResult(nll, nll, entropy, is_top1, stats.m + log_s, one, one)
    q_shift = stats.m + beta * stats.s_q.log()
    if spec.name == "tofu":
        coef = tofu_focal_weight(-nll, spec.gamma)
        return RowResult(coef * (q_shift - stats.z_y), nll, entropy, is_top1, q_shift, coef, one)
    if spec.h == "linear":
        loss = stats.m - stats.z_y + stats.u_q / stats.s_q  # Σ_v q_v z_v − z_y
        return RowResult(loss, nll, entropy, is_top1, q_shift, one, one)
    mass = stats.a_q / stats.s_q
    # Σ_v a_v (z_v − z_y) with the weights' z_y_w, moved onto the tiles' own z_y
    loss = stats.b_q / stats.s_q + mass * (z_y_w - stats.z_y)
    return RowResult(loss, nll, entropy, is_top1, q_shift, one, mass)


def tiles(vocab_size: int, tile_cols: int) -> Iterator[tuple[int, slice]]:
    """``(first column, columns)`` of each vocabulary tile, in order."""
    for start in range(0, vocab_size, tile_cols):
        yield start, slice(start, min(start + tile_cols, vocab_size))


def accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` into the fp32 (or float64) ``acc``; the product stays in the inputs' dtype as the model's own head computes it."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(a @ b)


class TileBackend(NamedTuple):
    """How a tiled head folds one row chunk forward and yields its gradient tiles backward.

    The PyTorch backend (:mod:`divalign.heads.torch_tiles`) and the Triton one (:mod:`divalign.heads.triton_tiles`)
    share everything else: the row chunking, the saved per-row statistics, the fp32 gradient accumulation and the
    masking.
    """

    fold_rows: Callable[..., tuple[RowResult, torch.Tensor | None]]
    grad_tiles: Callable[..., Iterator[tuple[slice, torch.Tensor, torch.Tensor]]]
    accumulate_mm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
    tile_elements: int


class _TiledHeadFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, spec, chunk_rows, tile_cols, transform, backend):
        dtype = compute_dtype(hidden)
        pieces = []
        with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                h = hidden[rows].to(dtype)
                result, z_y_w = backend.fold_rows(h, weight, bias, labels[rows], spec, tile_cols, dtype, transform)
                pieces.append((*result, hidden.new_zeros(0, dtype=loss_dtype(dtype)) if z_y_w is None else z_y_w))
        if not pieces:  # no trainable row: empty results that still take part in the graph
            empty = hidden.new_zeros(0, dtype=loss_dtype(dtype))
            pieces.append((empty, empty, empty, empty.bool(), empty, empty, empty, empty))
        columns = [torch.cat(column) for column in zip(*pieces, strict=True)]
        loss, nll, entropy, is_top1, q_shift, coef, mass, z_y_w = columns
        ctx.save_for_backward(hidden, weight, bias, labels, q_shift, coef, mass, z_y_w)
        ctx.spec, ctx.chunk_rows, ctx.tile_cols = spec, chunk_rows, tile_cols
        ctx.transform, ctx.compute_dtype, ctx.backend = transform, dtype, backend
        ctx.mark_non_differentiable(nll, entropy, is_top1)
        return loss, nll, entropy, is_top1

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        hidden, weight, bias, labels, q_shift, coef, mass, z_y_w = ctx.saved_tensors
        wants = ctx.needs_input_grad[:3]
        if grad_loss is None or not any(wants):
            return (None,) * 9
        with gather_lm_head(weight, bias), torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
            scaled = (coef * grad_loss.to(coef.dtype)).contiguous()
            grads = _backward(ctx, hidden, weight, bias, labels, q_shift, scaled, mass, z_y_w, wants)
        return (*grads, None, None, None, None, None, None)


def _backward(ctx, hidden, weight, bias, labels, q_shift, scaled_coef, mass, z_y_w, wants):
    dtype, n_rows, accumulate = ctx.compute_dtype, hidden.shape[0], ctx.backend.accumulate_mm
    # Several row chunks add into each weight tile's gradient: sum them in fp32 (float64 heads: float64) so bf16
    # heads keep small terms
    acc_dtype = loss_dtype(dtype)
    head_dtype = acc_dtype if n_rows > ctx.chunk_rows else dtype
    grad_hidden = torch.zeros(hidden.shape, dtype=acc_dtype, device=hidden.device) if wants[0] else None
    grad_weight = torch.zeros(weight.shape, dtype=head_dtype, device=weight.device) if wants[1] else None
    grad_bias = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device) if wants[2] else None
    logsigmoid = is_logsigmoid(ctx.spec)
    for start in range(0, n_rows, ctx.chunk_rows):
        rows = slice(start, start + ctx.chunk_rows)
        h = hidden[rows].to(dtype)
        gradients = ctx.backend.grad_tiles(
            h, weight, bias, labels[rows], ctx.spec, ctx.tile_cols, dtype, ctx.transform,
            q_shift[rows], scaled_coef[rows], mass[rows], z_y_w[rows] if logsigmoid else None,
        )  # fmt: skip
        for cols, w_tile, grad in gradients:
            if grad_hidden is not None:
                accumulate(grad_hidden[rows], grad, w_tile)
            if grad_weight is not None:
                accumulate(grad_weight[cols], grad.t(), h)
            if grad_bias is not None:
                grad_bias[cols] += grad.to(acc_dtype).sum(0)
    return [
        None if grad_hidden is None else grad_hidden.to(hidden.dtype),
        None if grad_weight is None else grad_weight.to(weight.dtype),
        None if grad_bias is None else grad_bias.to(bias.dtype),
    ]


def tiled_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    spec: LossSpec,
    chunk_rows: int | None,
    transform: LogitTransform,
    tile_cols: int | None,
    backend: TileBackend,
) -> HeadOutput:
    """Per-token CE/TOFU/GEM without a ``(rows, vocab)`` block, the tile work done by ``backend``; the arguments and
    results of :func:`divalign.heads.torch_tiles.fused_head_loss`."""
    if not isinstance(spec, LossSpec):
        raise TypeError(f"the fused head implements LossSpec losses only, got {type(spec).__name__}")
    validate_spec(spec)
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    mask = labels != IGNORE_INDEX
    n_rows = int(mask.sum())
    rows = chunk_rows or min(max(n_rows, 1), DEFAULT_FUSED_ROWS)
    if rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of token rows, got {chunk_rows}")
    cols = tile_cols or default_tile_cols(rows, weight.shape[0], backend.tile_elements)
    if cols < 1:
        raise ValueError(f"tile_cols must be a positive number of vocabulary columns, got {tile_cols}")
    compact = _TiledHeadFunction.apply(
        hidden[mask], weight, bias, labels[mask].contiguous(), spec, rows, cols, transform, backend
    )
    # masked_scatter keeps the loss connected to the graph even when no row is trainable
    return HeadOutput(*(t.new_zeros(mask.shape).masked_scatter(mask, t) for t in compact))
