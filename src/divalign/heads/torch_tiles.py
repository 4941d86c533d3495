"""The PyTorch tile backend of the tiled head (:mod:`divalign.heads.tiled`): the tested path on CPU and CUDA.

Each tile's logits are an fp32 ``(rows, tile)`` block from one matmul (:func:`~divalign.heads.projection.project`);
:func:`tile_stats` reduces it to the row accumulators, :func:`merge_stats` merges accumulators of consecutive column
ranges (online log-sum-exp), and :func:`tile_grad` turns a recomputed tile into its gradient in place.
:func:`fused_head_loss` is the head with this backend (``loss_head: fused``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .losses import LossSpec
from .projection import PLAIN_LOGITS, HeadOutput, LogitTransform, project
from .tiled import (
    RowResult,
    RowStats,
    TileBackend,
    accumulate_mm,
    finish_rows,
    is_logsigmoid,
    loss_beta,
    target_logits,
    tiled_head_loss,
    tiles,
)

# One fp32 (rows, tile) block of this many elements (64 MiB); a few such blocks live at once while a tile is folded
TILE_ELEMENTS = 2**24


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
    beta = loss_beta(spec)
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
    beta = loss_beta(spec)
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
    if is_logsigmoid(spec):
        z_y_w = target_logits(hidden, weight, bias, labels, compute_dtype, transform)
    stats = None
    for start, cols in tiles(weight.shape[0], tile_cols):
        z = project(hidden, weight[cols], None if bias is None else bias[cols], compute_dtype, transform)
        tile = tile_stats(z, labels - start, start, spec, z_y_w)
        stats = tile if stats is None else merge_stats(stats, tile, loss_beta(spec))
    return finish_rows(stats, labels, spec, z_y_w), z_y_w


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
    for first, cols in tiles(weight.shape[0], tile_cols):
        w_tile = weight[cols].to(dtype)
        z = project(h, w_tile, None if bias is None else bias[cols], dtype, transform)
        grad = tile_grad(z, labels - first, spec, q_shift, scaled_coef, mass, z_y_w, transform)
        grad_c = grad.to(dtype)  # the head's backward runs in its compute dtype, as autograd would
        del z, grad  # one tile alive while the caller runs the backward matmuls
        yield cols, w_tile, grad_c


TORCH_BACKEND = TileBackend(forward_rows, grad_tiles, accumulate_mm, TILE_ELEMENTS)


def fused_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    spec: LossSpec,
    chunk_rows: int | None = None,
    transform: LogitTransform = PLAIN_LOGITS,
    tile_cols: int | None = None,
    backend: TileBackend = TORCH_BACKEND,
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
        tile_cols: vocabulary columns per tile (default: :func:`~divalign.heads.tiled.default_tile_cols`).
        backend: who does the tile work: these PyTorch tiles, or the Triton kernels
            (:func:`divalign.heads.triton_tiles.triton_head_loss` passes its ``TRITON_BACKEND``).
    """
    return tiled_head_loss(hidden, weight, bias, labels, spec, chunk_rows, transform, tile_cols, backend)
