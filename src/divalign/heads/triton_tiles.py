"""The Triton tile backend of the tiled head (opt-in: ``select_head("fused-triton", ...)``).

Same algorithm and contract as :func:`divalign.heads.torch_tiles.fused_head_loss` (the formulas:
:mod:`divalign.heads.tiled`): the projection of each vocabulary tile is one cuBLAS matmul into a reused ``(rows,
tile)`` buffer in the compute dtype; what the PyTorch backend does with several fp32 ``(rows, tile)`` temporaries
happens here in registers, one program per token row:

- forward: ``_fold_kernel`` reads the tile once and updates the row's online accumulators (running max and its first
  index, ``Σ e^(z−m)``, ``Σ e^(z−m)(z−m)``, the tempered sums, the GEM-logsigmoid weighted sums, ``z_y``);
- backward: ``_grad_kernel`` overwrites the recomputed tile with ``c · (q ⊙ w − A · e_y)`` through the logit
  transform, which then feeds the two backward matmuls (fp32 accumulation).

Status: checked against the reference only in Triton's CPU interpreter (``TRITON_INTERPRET=1``,
``tests/scripts/triton_interpret_check.py``); it has not been compiled or timed on a GPU, so ``"auto"`` never picks it.
"""

from __future__ import annotations

from typing import Any

import torch

from . import tiled
from .losses import LossSpec
from .projection import HeadOutput, LogitTransform
from .torch_tiles import fused_head_loss

try:
    import triton
    import triton.language as tl
except ImportError:  # the module still imports; triton_head_loss then raises
    triton = None

# One (rows, tile) buffer in the compute dtype of this many elements (128 MiB in bf16); no fp32 tile exists
TRITON_TILE_ELEMENTS = 2**26
BLOCK_COLS = 1024
KINDS = {"ce": 0, "tofu": 1, "gem-linear": 2, "gem-logsigmoid": 3}
N_STATS = 8  # m, z_y, s_p, t_p, s_q, u_q, a_q, b_q


def _kind(spec: LossSpec) -> int:
    return KINDS[spec.name if spec.name != "gem" else f"gem-{spec.h}"]


def _jit(fn):
    return triton.jit(fn) if triton is not None else fn


@_jit
def _transform(z, scale, softcap, HAS_SOFTCAP: tl.constexpr):
    z = z * scale
    if HAS_SOFTCAP:
        z = softcap * (2.0 * tl.sigmoid(2.0 * z / softcap) - 1.0)  # softcap · tanh(z / softcap)
    return z


@_jit
def _fold_kernel(
    tile_ptr,
    tile_stride,
    labels_ptr,
    z_y_w_ptr,
    stats_ptr,
    argmax_ptr,
    n_rows,
    col_start,
    n_cols,
    inv_beta,
    scale,
    softcap,
    KIND: tl.constexpr,
    HAS_Q: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per row: fold this vocabulary tile into the row's running accumulators
    row = tl.program_id(0).to(tl.int64)
    row_ptr = tile_ptr + row * tile_stride
    m = tl.load(stats_ptr + row)
    s_p = tl.load(stats_ptr + 2 * n_rows + row)
    t_p = tl.load(stats_ptr + 3 * n_rows + row)
    s_q = tl.load(stats_ptr + 4 * n_rows + row)
    u_q = tl.load(stats_ptr + 5 * n_rows + row)
    a_q = tl.load(stats_ptr + 6 * n_rows + row)
    b_q = tl.load(stats_ptr + 7 * n_rows + row)
    arg = tl.load(argmax_ptr + row)
    z_y_w = 0.0
    if KIND == 3:
        z_y_w = tl.load(z_y_w_ptr + row)
    for start in range(0, n_cols, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        valid = offsets < n_cols
        z = _transform(tl.load(row_ptr + offsets, mask=valid, other=0.0).to(tl.float32), scale, softcap, HAS_SOFTCAP)
        block_max = tl.max(tl.where(valid, z, float("-inf")), axis=0)
        first = tl.min(tl.where(valid & (z == block_max), offsets, n_cols), axis=0)
        arg = tl.where(block_max > m, col_start + first, arg)  # strictly greater: ties keep the first index
        new_m = tl.maximum(m, block_max)
        # The first block starts from m = -inf and zero sums: shift 0 keeps them zero (no -inf · 0)
        shift = tl.where(m > float("-inf"), m - new_m, 0.0)
        d = tl.where(valid, z - new_m, 0.0)
        e = tl.where(valid, tl.exp(d), 0.0)
        t_p = tl.exp(shift) * (t_p + shift * s_p) + tl.sum(e * d, axis=0)
        s_p = s_p * tl.exp(shift) + tl.sum(e, axis=0)
        if KIND > 0:
            scale_q = tl.exp(shift)
            eq = e
            if HAS_Q:
                scale_q = tl.exp(shift * inv_beta)
                eq = tl.where(valid, tl.exp(d * inv_beta), 0.0)
            if KIND == 2:
                u_q = scale_q * (u_q + shift * s_q) + tl.sum(eq * d, axis=0)
            if KIND == 3:
                gap = tl.where(valid, z - z_y_w, 0.0)
                wq = eq * tl.sigmoid(0.01 * gap)
                a_q = a_q * scale_q + tl.sum(wq, axis=0)
                b_q = b_q * scale_q + tl.sum(wq * gap, axis=0)
            s_q = s_q * scale_q + tl.sum(eq, axis=0)
        m = new_m
    tl.store(stats_ptr + row, m)
    tl.store(stats_ptr + 2 * n_rows + row, s_p)
    tl.store(stats_ptr + 3 * n_rows + row, t_p)
    tl.store(stats_ptr + 4 * n_rows + row, s_q)
    tl.store(stats_ptr + 5 * n_rows + row, u_q)
    tl.store(stats_ptr + 6 * n_rows + row, a_q)
    tl.store(stats_ptr + 7 * n_rows + row, b_q)
    tl.store(argmax_ptr + row, arg)
    local = tl.load(labels_ptr + row) - col_start
    if (local >= 0) & (local < n_cols):
        z_y = _transform(tl.load(row_ptr + local).to(tl.float32), scale, softcap, HAS_SOFTCAP)
        tl.store(stats_ptr + n_rows + row, z_y)


@_jit
def _grad_kernel(
    tile_ptr,
    tile_stride,
    labels_ptr,
    z_y_w_ptr,
    q_shift_ptr,
    coef_ptr,
    mass_ptr,
    col_start,
    n_cols,
    inv_beta,
    scale,
    softcap,
    LOGSIGMOID: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per row: replace the recomputed logits by d loss / d (raw head output), in place
    row = tl.program_id(0).to(tl.int64)
    row_ptr = tile_ptr + row * tile_stride
    local = tl.load(labels_ptr + row) - col_start
    q_shift = tl.load(q_shift_ptr + row)
    coef = tl.load(coef_ptr + row)
    target = coef * tl.load(mass_ptr + row)
    z_y_w = 0.0
    if LOGSIGMOID:
        z_y_w = tl.load(z_y_w_ptr + row)
    for start in range(0, n_cols, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        valid = offsets < n_cols
        raw = tl.load(row_ptr + offsets, mask=valid, other=0.0)
        z = _transform(raw.to(tl.float32), scale, softcap, HAS_SOFTCAP)
        grad = tl.exp((z - q_shift) * inv_beta)
        if LOGSIGMOID:
            grad = grad * tl.sigmoid(0.01 * (z - z_y_w))
        grad = coef * grad - tl.where(offsets == local, target, 0.0)
        if HAS_SOFTCAP:
            tanh = z / softcap
            grad = grad * (1.0 - tanh * tanh)
        grad = grad * scale
        tl.store(row_ptr + offsets, grad.to(raw.dtype), mask=valid)


def _project_into(out: torch.Tensor, h: torch.Tensor, w_tile: torch.Tensor, b_tile: torch.Tensor | None) -> None:
    torch.mm(h, w_tile.t(), out=out)
    if b_tile is not None:
        out.add_(b_tile)


def _leading_view(buffer: torch.Tensor, width: int) -> torch.Tensor:
    """A contiguous ``(rows, width)`` view of the start of the tile buffer (the last tile may be narrower)."""
    return buffer.view(-1)[: buffer.shape[0] * width].view(buffer.shape[0], width)


def _transform_args(transform: LogitTransform) -> tuple[float, float, bool]:
    has_softcap = transform.softcap is not None
    return float(transform.scale), float(transform.softcap) if has_softcap else 1.0, has_softcap


def _fold_rows(
    h, weight, bias, labels, spec, tile_cols, dtype, transform
) -> tuple[tiled.RowResult, torch.Tensor | None]:
    n, beta = h.shape[0], tiled.loss_beta(spec)
    z_y_w = tiled.target_logits(h, weight, bias, labels, dtype, transform) if tiled.is_logsigmoid(spec) else None
    stats = torch.zeros(N_STATS, n, dtype=torch.float32, device=h.device)
    stats[0] = float("-inf")
    argmax = torch.zeros(n, dtype=torch.int64, device=h.device)
    buffer = torch.empty(n, min(tile_cols, weight.shape[0]), dtype=dtype, device=h.device)  # reused by every tile
    scale, softcap, has_softcap = _transform_args(transform)
    for start, cols in tiled.tiles(weight.shape[0], tile_cols):
        tile = _leading_view(buffer, cols.stop - start)
        _project_into(tile, h, weight[cols].to(dtype), None if bias is None else bias[cols].to(dtype))
        _fold_kernel[(n,)](
            tile, tile.stride(0), labels, stats if z_y_w is None else z_y_w, stats, argmax, n, start,
            tile.shape[1], 1.0 / beta, scale, softcap,
            KIND=_kind(spec), HAS_Q=beta != 1.0, HAS_SOFTCAP=has_softcap, BLOCK=BLOCK_COLS,
        )  # fmt: skip
    m, z_y, s_p, t_p, s_q, u_q, a_q, b_q = stats
    kind = _kind(spec)
    row_stats = tiled.RowStats(
        m, argmax, z_y, s_p, t_p,
        s_q if kind > 0 else None, u_q if kind == 2 else None, a_q if kind == 3 else None, b_q if kind == 3 else None,
    )  # fmt: skip
    return tiled.finish_rows(row_stats, labels, spec, z_y_w), z_y_w


def _addmm_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in fp32; on CUDA without first rounding a bf16 product to bf16."""
    if acc.is_cuda and a.dtype != acc.dtype:
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        tiled.accumulate_mm(acc, a, b)


def _grad_tiles(h, weight, bias, labels, spec, tile_cols, dtype, transform, q_shift, scaled_coef, mass, z_y_w):
    """``(columns, weight tile, gradient tile)``: each tile projected into one reused buffer, overwritten in place."""
    n, vocab = h.shape[0], weight.shape[0]
    buffer = torch.empty(n, min(tile_cols, vocab), dtype=dtype, device=h.device)
    scale, softcap, has_softcap = _transform_args(transform)
    logsigmoid = z_y_w is not None
    for start, cols in tiled.tiles(vocab, tile_cols):
        tile = _leading_view(buffer, cols.stop - start)
        w_tile = weight[cols].to(dtype)
        _project_into(tile, h, w_tile, None if bias is None else bias[cols].to(dtype))
        _grad_kernel[(n,)](
            tile, tile.stride(0), labels, z_y_w if logsigmoid else q_shift, q_shift,
            scaled_coef, mass, start, tile.shape[1], 1.0 / tiled.loss_beta(spec), scale, softcap,
            LOGSIGMOID=logsigmoid, HAS_SOFTCAP=has_softcap, BLOCK=BLOCK_COLS,
        )  # fmt: skip
        yield cols, w_tile, tile


# One (rows, tile) buffer in the compute dtype per chunk: the tile budget is TRITON_TILE_ELEMENTS, not fp32 blocks
TRITON_BACKEND = tiled.TileBackend(_fold_rows, _grad_tiles, _addmm_fp32, TRITON_TILE_ELEMENTS)


def triton_head_loss(*args: Any, **kwargs: Any) -> HeadOutput:
    """:func:`divalign.heads.torch_tiles.fused_head_loss` with the tile folds in Triton kernels (same arguments and results).

    Runs on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1`` (how it is tested).
    """
    if triton is None:
        raise ImportError("triton_head_loss needs the `triton` package")
    return fused_head_loss(*args, **kwargs, backend=TRITON_BACKEND)
