"""The chunked LM head equals the same loss on full logits: values, statistics and gradients.

The leaves are float64, which the head keeps (logits, losses and gradients in float64), so the comparisons are tight.
"""

import pytest
import torch
import torch.nn.functional as F

from divalign.heads.chunked import chunked_head_loss, default_chunk_rows
from divalign.heads.losses import LossSpec
from divalign.heads.projection import PLAIN_LOGITS, LogitTransform

SPECS = [LossSpec("tofu", 0.8, 3.0), LossSpec("gem", 0.7), LossSpec("gem", 0.7, h="logsigmoid"), LossSpec("ce")]


def leaves(n=29, hidden=12, vocab=37, bias=True, seed=0):
    torch.manual_seed(seed)
    h = torch.randn(n, hidden, dtype=torch.float64).requires_grad_()
    w = (torch.randn(vocab, hidden, dtype=torch.float64) / hidden**0.5).requires_grad_()
    b = torch.randn(vocab, dtype=torch.float64).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (n,))
    labels[::4] = -100
    return h, w, b, labels


def full_logits(h, w, b, transform=PLAIN_LOGITS):
    z = h @ w.t() + (0 if b is None else b)
    z = z * transform.scale
    return z if transform.softcap is None else transform.softcap * torch.tanh(z / transform.softcap)


def grads_of(out, params, upstream):
    for p in params:
        p.grad = None
    (out * upstream).sum().backward()
    return [p.grad.clone() for p in params]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("chunk_rows", [1, 5, 1000])
def test_chunked_equals_unchunked(spec, chunk_rows):
    h, w, b, labels = leaves()
    upstream = torch.rand(len(labels), dtype=torch.float64)
    chunked = chunked_head_loss(h, w, b, labels, spec, chunk_rows=chunk_rows)
    got = grads_of(chunked.loss, (h, w, b), upstream)
    expected_loss = spec(full_logits(h, w, b), labels)
    expected = grads_of(expected_loss, (h, w, b), upstream)
    assert chunked.loss.dtype == torch.float64
    torch.testing.assert_close(chunked.loss, expected_loss, rtol=1e-12, atol=1e-12)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_statistics_match_full_logits():
    h, w, b, labels = leaves()
    out = chunked_head_loss(h, w, b, labels, LossSpec("ce"), chunk_rows=3)
    z = full_logits(h, w, b)
    mask = labels != -100
    log_p = F.log_softmax(z, -1)
    nll = F.cross_entropy(z, labels, reduction="none", ignore_index=-100)
    entropy = -(log_p.exp() * log_p).sum(-1)
    torch.testing.assert_close(out.nll, nll, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.entropy[mask], entropy[mask], rtol=1e-12, atol=1e-12)
    assert torch.equal(out.is_top1, (z.argmax(-1) == labels) & mask)
    assert torch.all(out.entropy[~mask] == 0)


def test_softcap_and_scale_are_applied():
    h, w, _, labels = leaves(bias=False)
    transform = LogitTransform(scale=0.5, softcap=3.0)
    spec = LossSpec("tofu", 0.8, 3.0)
    upstream = torch.ones(len(labels), dtype=torch.float64)
    out = chunked_head_loss(h, w, None, labels, spec, chunk_rows=4, transform=transform)
    got = grads_of(out.loss, (h, w), upstream)
    expected_loss = spec(full_logits(h, w, None, transform), labels)
    expected = grads_of(expected_loss, (h, w), upstream)
    torch.testing.assert_close(out.loss, expected_loss, rtol=1e-12, atol=1e-12)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_all_masked_input_gives_zero_loss_and_gradient():
    h, w, b, labels = leaves()
    out = chunked_head_loss(h, w, b, torch.full_like(labels, -100), LossSpec("gem", 0.7))
    out.loss.sum().backward()
    assert torch.equal(out.loss, torch.zeros_like(out.loss))
    assert torch.equal(h.grad, torch.zeros_like(h)) and torch.equal(w.grad, torch.zeros_like(w))


def test_bf16_hidden_states_keep_their_dtype_in_gradients():
    h, w, _, labels = leaves()
    h16, w16 = h.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    out = chunked_head_loss(h16, w16, None, labels, LossSpec("tofu", 0.8, 3.0), chunk_rows=7)
    out.loss.sum().backward()
    assert out.loss.dtype == torch.float32 and h16.grad.dtype == torch.bfloat16 and w16.grad.dtype == torch.bfloat16
    reference = LossSpec("tofu", 0.8, 3.0)((h16 @ w16.t()).float(), labels)
    torch.testing.assert_close(out.loss, reference, rtol=1e-5, atol=1e-5)


def test_default_chunk_bounds_the_logit_block():
    assert default_chunk_rows(151_936) * 151_936 <= 2**25
    assert default_chunk_rows(10**9) >= 16
    with pytest.raises(ValueError, match="chunk_rows"):
        h, w, b, labels = leaves()
        chunked_head_loss(h, w, b, labels, LossSpec("ce"), chunk_rows=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_heads_compute_the_loss_in_fp32(dtype):
    """fp32/bf16/fp16 heads: the matmul in the head's dtype (as the model runs it), the loss on fp32 logits."""
    h, w, b, labels = leaves()
    h, w, b = (t.detach().to(dtype) for t in (h, w, b))
    out = chunked_head_loss(h, w, b, labels, LossSpec("gem", 0.7), chunk_rows=5)
    assert out.loss.dtype == torch.float32
    expected = LossSpec("gem", 0.7)((h @ w.t() + b).float(), labels)
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)
