"""Run the Triton fused head in Triton's CPU interpreter and compare it with the reference chunked head.

Usage (TRITON_INTERPRET=1 must be set before triton is imported):
    TRITON_INTERPRET=1 python tests/scripts/triton_interpret_check.py tofu 0.8 3.0 linear
Exits non-zero on a mismatch. Called by tests/test_fused_head.py when triton is installed.
"""

from __future__ import annotations

import os
import sys

import torch

from divalign.heads.chunked import chunked_head_loss
from divalign.heads.losses import IGNORE_INDEX, LossSpec
from divalign.heads.projection import LogitTransform
from divalign.heads.triton_tiles import triton_head_loss


def _problem(dtype: torch.dtype, n=29, hidden=16, vocab=203, scale=4.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=gen) * scale / hidden**0.5).to(dtype).requires_grad_()
    b = (torch.randn(vocab, generator=gen) * 0.1).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (n,), generator=gen)
    with torch.no_grad():
        labels[1::3] = (h.float() @ w.float().t()).argmax(-1)[1::3]
    labels[::5] = IGNORE_INDEX
    return h, w, b, labels, torch.randn(n, generator=gen)


def _run(head, problem, spec, **kwargs):
    h, w, b, labels, upstream = problem
    out = head(h, w, b, labels, spec, **kwargs)
    return out, torch.autograd.grad((out.loss * upstream).sum(), (h, w, b))


def check(spec: LossSpec, dtype: torch.dtype, transform: LogitTransform, tile_cols: int, chunk_rows: int) -> None:
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    problem = _problem(dtype)
    ref, ref_grads = _run(chunked_head_loss, problem, spec, chunk_rows=8, transform=transform)
    out, grads = _run(triton_head_loss, problem, spec, chunk_rows=chunk_rows, tile_cols=tile_cols, transform=transform)
    for name in ("loss", "nll", "entropy"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), **tol, msg=name)
    assert torch.equal(out.is_top1, ref.is_top1), "is_top1"
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.float(), want.float(), **tol)


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1")
    name, beta, gamma, h = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    spec = LossSpec(name, beta=beta, gamma=gamma, h=h)  # type: ignore[arg-type]
    for dtype in (torch.float32, torch.bfloat16):
        for transform in (LogitTransform(), LogitTransform(scale=0.7, softcap=3.0)):
            for tile_cols, chunk_rows in ((64, 16), (203, 29), (1500, 7)):
                check(spec, dtype, transform, tile_cols, chunk_rows)
                print("ok", spec, dtype, transform, tile_cols, chunk_rows, flush=True)


if __name__ == "__main__":
    main()
