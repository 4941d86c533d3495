"""The fused (vocabulary-tiled) loss head against the reference chunked head, which autograd differentiates."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from divalign.heads.chunked import chunked_head_loss
from divalign.heads.losses import IGNORE_INDEX, LossSpec
from divalign.heads.projection import PLAIN_LOGITS, LogitTransform, project
from divalign.heads.registry import select_head
from divalign.heads.torch_tiles import fused_head_loss

SPECS = [
    LossSpec("ce"),
    LossSpec("tofu", beta=0.8, gamma=3.0),
    LossSpec("tofu", beta=1.0, gamma=3.0),
    LossSpec("tofu", beta=0.8, gamma=0.0),
    LossSpec("tofu", beta=0.5, gamma=0.5),
    LossSpec("gem", beta=0.7, h="linear"),
    LossSpec("gem", beta=1.0, h="linear"),
    LossSpec("gem", beta=0.7, h="logsigmoid"),
]
SPEC_IDS = [f"{s.name}-b{s.beta}-g{s.gamma}-{s.h}" for s in SPECS]
ROOT = Path(__file__).resolve().parents[1]


def _problem(n=37, hidden=24, vocab=301, dtype=torch.float32, scale=1.0, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=gen) * scale / hidden**0.5).to(dtype).requires_grad_()
    b = (torch.randn(vocab, generator=gen) * 0.1).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (n,), generator=gen)
    with torch.no_grad():  # some targets the model already predicts, so is_top1 and TOFU's small g(p_y) are covered
        labels[1::3] = (h.float() @ w.float().t()).argmax(-1)[1::3]
    labels[::5] = IGNORE_INDEX
    upstream = torch.randn(n, generator=gen)
    return h, w, b, labels, upstream


def _run(head, h, w, b, labels, upstream, spec, **kwargs):
    out = head(h, w, b, labels, spec, **kwargs)
    leaves = [t for t in (h, w, b) if t is not None]
    grads = torch.autograd.grad((out.loss * upstream).sum(), leaves, allow_unused=True)
    return out, grads


# bf16 gradients: the fused and reference heads round differently (up to ~8e-3 of the largest entry measured), so the
# tolerance is relative to the largest gradient; an absolute 3e-2 would pass any error in gradients that small
BF16_GRAD_REL = 1.5e-2


def assert_grads_close(got, want, rel):
    """Each gradient within ``rel`` of its largest entry (and ``rel`` relative elementwise), in the same dtype."""
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype, f"gradient {index}: {g.dtype} != {w.dtype}"
        scale = w.abs().max().item()
        torch.testing.assert_close(g.double(), w.double(), rtol=rel, atol=rel * scale, msg=f"gradient {index}")


def _compare(spec, problem, tol, transform=PLAIN_LOGITS, tile_cols=64, chunk_rows=16, grad_rel=None):
    h, w, b, labels, upstream = problem
    ref, ref_grads = _run(chunked_head_loss, h, w, b, labels, upstream, spec, chunk_rows=8, transform=transform)
    sizes = dict(chunk_rows=chunk_rows, tile_cols=tile_cols, transform=transform)
    out, grads = _run(fused_head_loss, h, w, b, labels, upstream, spec, **sizes)
    for name in ("loss", "nll", "entropy"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), **tol, msg=name)
    assert torch.equal(out.is_top1, ref.is_top1)
    if grad_rel is not None:
        assert_grads_close(grads, ref_grads, grad_rel)
        return out
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, **tol)
    return out


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_fp32_matches_reference(spec):
    out = _compare(spec, _problem(scale=4.0), dict(rtol=1e-4, atol=1e-5))
    assert out.is_top1.any()  # the case is not vacuous


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_bf16_matches_reference(spec):
    h, w, b, labels, upstream = _problem(dtype=torch.bfloat16, scale=4.0)
    # the trainer's reduction: each token's loss divided by the token count, so every gradient is small
    problem = (h, w, b, labels, upstream / (labels != IGNORE_INDEX).sum())
    _compare(spec, problem, dict(rtol=3e-2, atol=3e-2), grad_rel=BF16_GRAD_REL)


class _WrongNonTargetGradient(torch.autograd.Function):
    """Identity on the logits whose backward scales every non-target column's gradient by 1.1: a wrong head."""

    @staticmethod
    def forward(ctx, logits, labels):
        ctx.save_for_backward(labels)
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad):
        (labels,) = ctx.saved_tensors
        scale = torch.full_like(grad, 1.1)
        rows = (labels != IGNORE_INDEX).nonzero().squeeze(1)
        scale[rows, labels[rows]] = 1.0
        return grad * scale, None


@pytest.mark.parametrize("spec", [SPECS[1], SPECS[-1]], ids=[SPEC_IDS[1], SPEC_IDS[-1]])
def test_bf16_gradient_tolerance_catches_a_wrong_non_target_gradient(spec):
    """The gradient tolerance above fails a head whose only error is in the non-target columns, which the former
    absolute rtol = atol = 3e-2 let through."""
    h, w, b, labels, upstream = _problem(dtype=torch.bfloat16, scale=4.0)
    upstream = upstream / (labels != IGNORE_INDEX).sum()
    _, right = _run(chunked_head_loss, h, w, b, labels, upstream, spec, chunk_rows=8)
    wrong_loss = lambda z, y: spec(_WrongNonTargetGradient.apply(z, y), y)  # noqa: E731
    _, wrong = _run(chunked_head_loss, h, w, b, labels, upstream, wrong_loss, chunk_rows=8)
    for got, want in zip(wrong, right, strict=True):
        torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)  # the former tolerance: blind to it
    with pytest.raises(AssertionError):
        assert_grads_close(wrong, right, BF16_GRAD_REL)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_float64_head_stays_float64(spec):
    """A float64 head is computed and accumulated in float64: equal to the float64 reference to ~1e-12, which an fp32
    accumulator anywhere would miss by orders of magnitude."""
    transform = LogitTransform(scale=0.7, softcap=3.0)
    out = _compare(spec, _problem(dtype=torch.float64, scale=4.0), dict(rtol=1e-10, atol=1e-12), transform=transform)
    assert out.loss.dtype == out.nll.dtype == torch.float64


@pytest.mark.parametrize("spec", SPECS[:2] + SPECS[-2:], ids=SPEC_IDS[:2] + SPEC_IDS[-2:])
@pytest.mark.parametrize("tile_cols,chunk_rows", [(1, 64), (7, 5), (300, 3), (301, 37), (1000, 1000)])
def test_tiles_and_chunks_of_any_size(spec, tile_cols, chunk_rows):
    _compare(spec, _problem(), dict(rtol=1e-4, atol=1e-5), tile_cols=tile_cols, chunk_rows=chunk_rows)


@pytest.mark.parametrize("spec", SPECS[:2] + SPECS[-2:], ids=SPEC_IDS[:2] + SPEC_IDS[-2:])
def test_softcap_and_scale(spec):
    transform = LogitTransform(scale=0.7, softcap=3.0)
    _compare(spec, _problem(scale=6.0), dict(rtol=1e-4, atol=1e-5), transform=transform)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_no_bias_and_only_some_grads(spec):
    h, w, _, labels, upstream = _problem(bias=False)
    w.requires_grad_(False)
    ref = chunked_head_loss(h, w, None, labels, spec)
    out = fused_head_loss(h, w, None, labels, spec, tile_cols=50)
    (want,) = torch.autograd.grad((ref.loss * upstream).sum(), h)
    (got,) = torch.autograd.grad((out.loss * upstream).sum(), h)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_masked_rows_are_zero(spec):
    h, w, b, labels, upstream = _problem()
    out, (grad_h, _, _) = _run(fused_head_loss, h, w, b, labels, upstream, spec, tile_cols=64)
    ignored = labels == IGNORE_INDEX
    for t in (out.loss, out.nll, out.entropy, grad_h.abs().sum(-1)):
        assert torch.all(t[ignored] == 0)
    assert not out.is_top1[ignored].any()


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_all_rows_masked(spec):
    h, w, b, labels, upstream = _problem()
    labels = torch.full_like(labels, IGNORE_INDEX)
    out, grads = _run(fused_head_loss, h, w, b, labels, upstream, spec)
    assert out.loss.shape == labels.shape and torch.all(out.loss == 0)
    assert all(g is None or torch.all(g == 0) for g in grads)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_logits_stay_finite(spec, dtype):
    h, w, b, labels, upstream = _problem(n=16, hidden=8, vocab=97, scale=1e4 * 8**0.5 / 3, dtype=dtype)
    out, grads = _run(fused_head_loss, h, w, b, labels, upstream, spec, tile_cols=32)
    for t in (*out[:3], *grads):
        assert torch.isfinite(t.float()).all()
    if dtype == torch.float32:  # compare where the reference itself is finite
        ref, ref_grads = _run(chunked_head_loss, h, w, b, labels, upstream, spec)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-4, atol=1e-2)
        torch.testing.assert_close(out.nll, ref.nll, rtol=1e-4, atol=1e-2)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3 * want.abs().max().item())


def test_argmax_ties_pick_the_first_index():
    h = torch.ones(3, 2)
    w = torch.zeros(10, 2)  # every logit equal: argmax is token 0
    labels = torch.tensor([0, 5, 9])
    out = fused_head_loss(h, w, None, labels, LossSpec("ce"), tile_cols=3)
    assert out.is_top1.tolist() == [True, False, False]


def test_autocast_matches_reference():
    h, w, b, labels, upstream = _problem()
    spec = LossSpec("tofu", beta=0.8, gamma=3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, ref_grads = _run(chunked_head_loss, h, w, b, labels, upstream, spec)
        out, grads = _run(fused_head_loss, h, w, b, labels, upstream, spec, tile_cols=64)
    torch.testing.assert_close(out.loss, ref.loss, rtol=3e-2, atol=3e-2)
    assert_grads_close(grads, ref_grads, BF16_GRAD_REL)


def test_leading_dims_are_flattened():
    h, w, b, labels, _ = _problem(n=36)
    spec = LossSpec("gem", beta=0.7)
    flat = fused_head_loss(h, w, b, labels, spec)
    shaped = fused_head_loss(h.reshape(4, 9, -1), w, b, labels.reshape(4, 9), spec)
    torch.testing.assert_close(shaped.loss, flat.loss)


def test_rejects_bad_arguments():
    h, w, b, labels, _ = _problem()
    with pytest.raises(TypeError):
        fused_head_loss(h, w, b, labels, lambda z, y: z.sum(-1))
    with pytest.raises(ValueError):
        fused_head_loss(h, w, b, labels, LossSpec("tofu", beta=0.0))
    with pytest.raises(ValueError):
        fused_head_loss(h, w, b, labels, LossSpec("gem", h="cubic"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        select_head("fastest", torch.device("cpu"))


def test_select_head():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_head("auto", cpu) is select_head("reference", cpu)
    assert select_head("auto", cuda) is select_head("fused", cuda)
    h, w, b, labels, upstream = _problem()
    spec = LossSpec("tofu", beta=0.8, gamma=3.0)
    ref, ref_grads = _run(select_head("reference", cpu), h, w, b, labels, upstream, spec, chunk_rows=None)
    for mode in ("fused", "fused-triton"):  # on CPU "fused-triton" is the plain fused path
        out, grads = _run(select_head(mode, cpu), h, w, b, labels, upstream, spec, chunk_rows=8, transform=PLAIN_LOGITS)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-4, atol=1e-5)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # a plain callable has no fused kernel: the fused selection falls back to the reference
    loss_fn = LossSpec("ce").__call__
    out = select_head("fused", cpu)(h, w, b, labels, loss_fn)
    torch.testing.assert_close(out.loss, chunked_head_loss(h, w, b, labels, loss_fn).loss)


@pytest.mark.slow
def test_loss_head_bench_smoke():
    script = ROOT / "benchmarks" / "loss_head_bench.py"
    args = ["--device", "cpu", "--small", "--tokens", "64", "--hidden", "16", "--vocab", "500", "--repeats", "1"]
    args += ["--variants", "matmuls", "reference-tofu", "fused-tofu"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fused/matmuls" in done.stdout


# CI installs triton (the dev extra) and must run these: there a missing triton fails instead of skipping
@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None and not os.environ.get("CI"), reason="triton is not installed"
)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_triton_kernels_in_interpreter(spec):
    script = ROOT / "tests" / "scripts" / "triton_interpret_check.py"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, str(script), spec.name, str(spec.beta), str(spec.gamma), spec.h]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_no_full_vocab_block_is_built(monkeypatch):
    import divalign.heads.torch_tiles as fused

    widths = []

    def recording_project(hidden, weight, *args, **kwargs):
        widths.append(weight.shape[0])
        return project(hidden, weight, *args, **kwargs)

    monkeypatch.setattr(fused, "project", recording_project)
    h, w, b, labels, upstream = _problem(vocab=301)
    _run(fused_head_loss, h, w, b, labels, upstream, LossSpec("gem", beta=0.7, h="logsigmoid"), tile_cols=64)
    assert widths and max(widths) <= 64  # forward and backward only ever project one vocabulary tile
    assert len(widths) == 2 * 5  # five tiles (the last one 45 wide), once forward, once backward
