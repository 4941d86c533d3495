"""Fused LM head for CE, TOFU and GEM: the per-token losses from one-pass row reductions over vocabulary tiles.

:func:`divalign.heads.chunked.chunked_head_loss` (the reference) builds each chunk's full ``(rows, vocab)`` fp32 logits
and lets autograd differentiate the per-token loss. Every loss here only needs, per token row, a handful of sums over
the vocabulary (docs/losses.md, "One head for both"), so this head walks the vocabulary one tile of columns at a time and
keeps per-row running accumulators relative to a running maximum (online log-sum-exp):

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
states and weight) is computed and accumulated in float64 throughout, like :func:`divalign.losses.loss_dtype`. The plain PyTorch
version below is the tested path (CPU and CUDA); :mod:`divalign.fused_head_triton` folds tiles with Triton kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

from .heads.losses import IGNORE_INDEX, LossSpec, loss_dtype, tofu_focal_weight, upcast
from .heads.projection import PLAIN_LOGITS, HeadOutput, LogitTransform, compute_dtype, gather_lm_head, project

# One fp32 (rows, tile) block of this many elements (64 MiB); a few such blocks live at once while a tile is folded
TILE_ELEMENTS = 2**24
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


def _validate(spec: LossSpec) -> None:
    if spec.name not in ("ce", "tofu", "gem"):
        raise ValueError(f"unknown loss {spec.name!r}; expected 'ce', 'tofu' or 'gem'")
    if spec.name == "gem" and spec.h not in ("linear", "logsigmoid"):
        raise ValueError(f"gem h must be 'linear' or 'logsigmoid', got {spec.h!r}")
    if spec.name != "ce" and not spec.beta > 0:
        raise ValueError(f"beta must be positive, got {spec.beta}")


def _beta(spec: LossSpec) -> float:
    return 1.0 if spec.name == "ce" else float(spec.beta)


def _is_logsigmoid(spec: LossSpec) -> bool:
    return spec.name == "gem" and spec.h == "logsigmoid"


def default_tile_cols(rows: int, vocab_size: int, elements: int = TILE_ELEMENTS) -> int:
    """Vocabulary columns per tile so that one ``(rows, tile)`` block stays near ``elements`` (default
    :data:`TILE_ELEMENTS`)."""
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
    z = upcast(z)
    if transform.scale != 1.0:
        z = z * transform.scale
    if transform.softcap is not None:
        z = transform.softcap * torch.tanh(z / transform.softcap)
    return z


def _target_in_tile(z: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inside = (local >= 0) & (local < z.shape[1])
    picked = z.gather(1, local.clamp(0, z.shape[1] - 1).unsqueeze(1)).squeeze(1)
    return inside, picked


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(1)`` as a batched dot product: no third ``(rows, tile)`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def tile_stats(
    z: torch.Tensor, local: torch.Tensor, start: int, spec: LossSpec, z_y_w: torch.Tensor | None
) -> RowStats:
    """Accumulators of one fp32 logits tile, relative to the tile's own row maximum (overwrites ``z``).

    ``local`` is the labels minus the tile's first column ``start``; ``z_y_w`` the logsigmoid weights' ``z_y``.
    """
    beta = _beta(spec)
    m, arg = z.max(dim=1)  # the first maximal index, as argmax
    inside, picked = _target_in_tile(z, local)
    stats = dict(m=m, argmax=arg + start, z_y=torch.where(inside, picked, torch.zeros_like(picked)))
    d = z.sub_(m.unsqueeze(1))  # in place: at most three (rows, tile) blocks live below
    e = d.exp()
    stats.update(s_p=e.sum(1), t_p=_row_dot(e, d), s_q=None, u_q=None, a_q=None, b_q=None)
    if spec.name == "ce":
        return RowStats(**stats)
    if beta != 1.0:
        del e
        e = d.div(beta).exp_()
    stats["s_q"] = e.sum(1)
    if spec.name == "gem" and spec.h == "linear":
        stats["u_q"] = _row_dot(e, d)
    elif z_y_w is not None:
        gap = d.add_((m - z_y_w).unsqueeze(1))  # z − z_y_w
        weighted = e.mul_(gap.mul(0.01).sigmoid_())
        stats.update(a_q=weighted.sum(1), b_q=_row_dot(weighted, gap))
    return RowStats(**stats)


def _rescaled(value: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor | None:
    return None if value is None else value * scale


def _shifted(sum_d: torch.Tensor | None, sum_e: torch.Tensor | None, shift: torch.Tensor, scale: torch.Tensor):
    # Σ e^(z−m')(z−m') from sums relative to m: e^(m−m') · (Σ e^(z−m)(z−m) + (m − m') Σ e^(z−m))
    return None if sum_d is None else scale * (sum_d + shift * sum_e)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None else a + b


def merge_stats(left: RowStats, right: RowStats, beta: float) -> RowStats:
    """Accumulators of two column ranges (``left`` before ``right``) relative to their common maximum."""
    m = torch.maximum(left.m, right.m)
    halves = []
    for part in (left, right):
        shift = part.m - m  # ≤ 0 and finite, so no inf·0 from an empty start
        scale, scale_q = shift.exp(), (shift / beta).exp()
        halves.append(
            (
                part.s_p * scale,
                _shifted(part.t_p, part.s_p, shift, scale),
                _rescaled(part.s_q, scale_q),
                _shifted(part.u_q, part.s_q, shift, scale_q),
                _rescaled(part.a_q, scale_q),
                _rescaled(part.b_q, scale_q),
            )
        )
    sums = [_add(a, b) for a, b in zip(*halves, strict=True)]
    argmax = torch.where(right.m > left.m, right.argmax, left.argmax)  # ties keep the earlier (first) index
    return RowStats(m, argmax, left.z_y + right.z_y, *sums)


def finish_rows(stats: RowStats, labels: torch.Tensor, spec: LossSpec, z_y_w: torch.Tensor | None) -> RowResult:
    """Per-token loss, statistics and backward coefficients from a row chunk's accumulators over the whole vocab."""
    beta = _beta(spec)
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


def tile_grad(
    z: torch.Tensor,
    local: torch.Tensor,
    spec: LossSpec,
    q_shift: torch.Tensor,
    scaled_coef: torch.Tensor,
    target_mass: torch.Tensor,
    z_y_w: torch.Tensor | None,
    transform: LogitTransform,
) -> torch.Tensor:
    """Gradient w.r.t. the head's raw output on one tile: ``c · (q ⊙ w − A · e_y)`` through the logit transform.

    ``scaled_coef`` is the upstream per-token gradient times ``c``. Overwrites ``z`` to keep one tile alive.
    """
    beta = _beta(spec)
    grad = z.sub(q_shift.unsqueeze(1)).div_(beta).exp_()
    if z_y_w is not None:
        grad.mul_(z.sub(z_y_w.unsqueeze(1)).mul_(0.01).sigmoid_())
    grad.mul_(scaled_coef.unsqueeze(1))
    inside, _ = _target_in_tile(z, local)
    rows = inside.nonzero().squeeze(1)
    grad[rows, local[rows]] -= (scaled_coef * target_mass)[rows]
    if transform.softcap is not None:  # d softcap·tanh(x/softcap) / dx = 1 − tanh², with tanh = z / softcap
        grad.mul_(z.div_(transform.softcap).square_().neg_().add_(1.0))
    if transform.scale != 1.0:
        grad.mul_(transform.scale)
    return grad


def _tiles(vocab_size: int, tile_cols: int):
    for start in range(0, vocab_size, tile_cols):
        yield start, slice(start, min(start + tile_cols, vocab_size))


def forward_rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    spec: LossSpec,
    tile_cols: int,
    compute_dtype: torch.dtype,
    transform: LogitTransform,
) -> tuple[RowResult, torch.Tensor | None]:
    """Fold every vocabulary tile of one row chunk; returns the rows' results and the logsigmoid ``z_y`` (or None)."""
    z_y_w = None
    if _is_logsigmoid(spec):
        z_y_w = target_logits(hidden, weight, bias, labels, compute_dtype, transform)
    stats = None
    for start, cols in _tiles(weight.shape[0], tile_cols):
        z = project(hidden, weight[cols], None if bias is None else bias[cols], compute_dtype, transform)
        tile = tile_stats(z, labels - start, start, spec, z_y_w)
        stats = tile if stats is None else merge_stats(stats, tile, _beta(spec))
    return finish_rows(stats, labels, spec, z_y_w), z_y_w


def _accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` into the fp32 (or float64) ``acc``; the product stays in the inputs' dtype as the model's own head computes it."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(a @ b)


def grad_tiles(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    spec: LossSpec,
    tile_cols: int,
    dtype: torch.dtype,
    transform: LogitTransform,
    q_shift: torch.Tensor,
    scaled_coef: torch.Tensor,
    mass: torch.Tensor,
    z_y_w: torch.Tensor | None,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """``(columns, weight tile, logits-gradient tile)`` of one row chunk, recomputed tile by tile (``dtype`` tiles)."""
    for first, cols in _tiles(weight.shape[0], tile_cols):
        w_tile = weight[cols].to(dtype)
        z = project(h, w_tile, None if bias is None else bias[cols], dtype, transform)
        grad = tile_grad(z, labels - first, spec, q_shift, scaled_coef, mass, z_y_w, transform)
        grad_c = grad.to(dtype)  # the head's backward runs in its compute dtype, as autograd would
        del z, grad  # one tile alive while the caller runs the backward matmuls
        yield cols, w_tile, grad_c


class TileBackend(NamedTuple):
    """How a tiled head folds one row chunk forward and yields its gradient tiles backward.

    The plain PyTorch backend below and the Triton one (:mod:`divalign.fused_head_triton`) share everything else:
    the row chunking, the saved per-row statistics, the fp32 gradient accumulation and the masking.
    """

    fold_rows: Callable[..., tuple[RowResult, torch.Tensor | None]]
    grad_tiles: Callable[..., Iterator[tuple[slice, torch.Tensor, torch.Tensor]]]
    accumulate_mm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
    tile_elements: int


PLAIN_BACKEND = TileBackend(forward_rows, grad_tiles, _accumulate_mm, TILE_ELEMENTS)


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
    logsigmoid = _is_logsigmoid(ctx.spec)
    for start in range(0, n_rows, ctx.chunk_rows):
        rows = slice(start, start + ctx.chunk_rows)
        h = hidden[rows].to(dtype)
        tiles = ctx.backend.grad_tiles(
            h, weight, bias, labels[rows], ctx.spec, ctx.tile_cols, dtype, ctx.transform,
            q_shift[rows], scaled_coef[rows], mass[rows], z_y_w[rows] if logsigmoid else None,
        )  # fmt: skip
        for cols, w_tile, grad in tiles:
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
    """:func:`fused_head_loss` with the tile work done by ``backend``."""
    if not isinstance(spec, LossSpec):
        raise TypeError(f"the fused head implements LossSpec losses only, got {type(spec).__name__}")
    _validate(spec)
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


def fused_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    spec: LossSpec,
    chunk_rows: int | None = None,
    transform: LogitTransform = PLAIN_LOGITS,
    tile_cols: int | None = None,
) -> HeadOutput:
    """Per-token CE/TOFU/GEM for ``logits = hidden @ weight.T (+ bias)`` without materialising a ``(rows, vocab)`` block.

    Same contract as :func:`divalign.heads.chunked.chunked_head_loss` with ``loss_fn=spec``: rows labelled ``-100``
    are skipped (zero loss, zero gradient); only ``loss`` is differentiable (w.r.t. ``hidden``, ``weight`` and
    ``bias``); ``nll``, ``entropy`` and ``is_top1`` are statistics of ``p = softmax(z)``.

    Args:
        hidden: ``(N, H)`` hidden states (any leading shape is flattened).
        weight: ``(V, H)`` LM-head weight. Under ZeRO-3 call this inside the model's forward with the head gathered;
            the backward gathers it again.
        bias: ``(V,)`` head bias or ``None``.
        labels: ``(N,)`` target ids.
        spec: the loss (``LossSpec("ce")``, ``LossSpec("tofu", beta, gamma)``, ``LossSpec("gem", beta, h=...)``).
        chunk_rows: token rows per chunk (default: all rows up to :data:`DEFAULT_FUSED_ROWS`).
        transform: logit scale and soft-capping the model applies after its head.
        tile_cols: vocabulary columns per tile (default: :func:`default_tile_cols`).
    """
    return tiled_head_loss(hidden, weight, bias, labels, spec, chunk_rows, transform, tile_cols, PLAIN_BACKEND)
