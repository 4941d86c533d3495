"""The loss-head modes a config can name, and :func:`select_head`, the one place a mode becomes an implementation.

The mode names are plain data here: the configs import them without loading a kernel module; each implementation is
imported only when :func:`select_head` hands it out (Triton, an optional dependency, only for ``"fused-triton"``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .projection import PLAIN_LOGITS, HeadOutput

HEAD_MODES = ("auto", "reference", "fused", "fused-triton")

HeadFn = Callable[..., HeadOutput]


def _reference_head(hidden, weight, bias, labels, loss_fn, chunk_rows=None, transform=PLAIN_LOGITS) -> HeadOutput:
    from .chunked import chunked_head_loss

    return chunked_head_loss(hidden, weight, bias, labels, loss_fn, chunk_rows, transform)


def _fused_head(hidden, weight, bias, labels, loss_fn, chunk_rows=None, transform=PLAIN_LOGITS) -> HeadOutput:
    from .losses import LossSpec

    # The trainer's chunk_rows is sized for full-vocab (rows, V) blocks; the tiled head picks its own
    del chunk_rows
    if not isinstance(loss_fn, LossSpec):
        return _reference_head(hidden, weight, bias, labels, loss_fn, None, transform)
    from .torch_tiles import fused_head_loss

    return fused_head_loss(hidden, weight, bias, labels, loss_fn, None, transform)


def _triton_head(hidden, weight, bias, labels, loss_fn, chunk_rows=None, transform=PLAIN_LOGITS) -> HeadOutput:
    from .losses import LossSpec

    # The kernels accumulate in fp32: a float64 head keeps its precision on the PyTorch tiles
    if not isinstance(loss_fn, LossSpec) or hidden.device.type != "cuda" or hidden.dtype == torch.float64:
        return _fused_head(hidden, weight, bias, labels, loss_fn, chunk_rows, transform)
    from .triton_tiles import triton_head_loss

    return triton_head_loss(hidden, weight, bias, labels, loss_fn, None, transform)


def select_head(mode: str, device: torch.device | str) -> HeadFn:
    """The LM-head implementation for ``mode``, called as ``chunked_head_loss(hidden, weight, bias, labels,
    loss_fn_or_spec, chunk_rows, transform)``.

    - ``"reference"``: :func:`divalign.heads.chunked.chunked_head_loss` (full-vocab row chunks, autograd backward).
    - ``"fused"``: :func:`divalign.heads.torch_tiles.fused_head_loss` (vocabulary tiles, plain PyTorch); a loss that is
      not a :class:`~divalign.heads.losses.LossSpec` falls back to the reference.
    - ``"fused-triton"``: the Triton tile kernels (:mod:`divalign.heads.triton_tiles`) on CUDA (opt-in: not yet run on
      a GPU), else (and for float64 hidden states) ``"fused"``.
    - ``"auto"``: ``"fused"`` on CUDA (never materialises a ``(rows, vocab)`` block), ``"reference"`` elsewhere.
    """
    if mode not in HEAD_MODES:
        raise ValueError(f"loss head mode must be one of {HEAD_MODES}, got {mode!r}")
    device = torch.device(device)
    if mode == "auto":
        mode = "fused" if device.type == "cuda" else "reference"
    return {"reference": _reference_head, "fused": _fused_head, "fused-triton": _triton_head}[mode]
