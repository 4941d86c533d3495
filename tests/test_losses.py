"""TOFU and GEM per-token losses against closed forms, computed independently in float64 NumPy.

float64 logits stay float64, so the values and gradients are compared tightly; bf16/fp16/fp32 are computed in fp32.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from divalign.heads.losses import LossSpec, gem_per_token, tofu_focal_weight, tofu_per_token


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def closed_form_tofu(z: np.ndarray, y: np.ndarray, gamma: float, beta: float):
    p, q = np_softmax(z), np_softmax(z / beta)
    rows = np.arange(len(y))
    p_y = p[rows, y]
    g = (1 - p_y) ** gamma - gamma * p_y * (1 - p_y) ** (gamma - 1) * np.log(p_y)
    value = -g * beta * np.log(q[rows, y])
    one_hot = np.eye(z.shape[1])[y]
    return value, g[:, None] * (q - one_hot)


def closed_form_gem(z: np.ndarray, y: np.ndarray, beta: float, h: str):
    rows = np.arange(len(y))
    p, q = np_softmax(z), np_softmax(z / beta)
    log_p = np.log(p)
    w = np.ones_like(z) if h == "linear" else 1 / (1 + np.exp(-0.01 * (z - z[rows, y][:, None])))
    a = q * w
    value = (a * (log_p - log_p[rows, y][:, None])).sum(-1)
    one_hot = np.eye(z.shape[1])[y]
    return value, a - a.sum(-1, keepdims=True) * one_hot


def value_and_grad(fn, z: np.ndarray, y: np.ndarray, **kwargs):
    logits = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    loss = fn(logits, torch.tensor(y), **kwargs)
    assert loss.dtype == torch.float64
    loss.sum().backward()
    return loss.detach().numpy(), logits.grad.numpy()


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.normal(scale=2.0, size=(7, 13)), rng.integers(0, 13, size=7)


@pytest.mark.parametrize(("gamma", "beta"), [(3.0, 0.8), (0.0, 0.8), (1.5, 1.0), (0.5, 0.6)])
def test_tofu_matches_closed_form(batch, gamma, beta):
    z, y = batch
    value, grad = value_and_grad(tofu_per_token, z, y, gamma=gamma, beta=beta)
    expected_value, expected_grad = closed_form_tofu(z, y, gamma, beta)
    np.testing.assert_allclose(value, expected_value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("h", ["linear", "logsigmoid"])
@pytest.mark.parametrize("beta", [0.7, 1.0, 0.3])
def test_gem_matches_closed_form(batch, beta, h):
    z, y = batch
    value, grad = value_and_grad(gem_per_token, z, y, beta=beta, h=h)
    expected_value, expected_grad = closed_form_gem(z, y, beta, h)
    np.testing.assert_allclose(value, expected_value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_tofu_beta_one_has_focal_loss_gradient(batch):
    z, y = batch
    _, grad = value_and_grad(tofu_per_token, z, y, gamma=2.0, beta=1.0)
    logits = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    log_p_y = F.log_softmax(logits, -1).gather(-1, torch.tensor(y)[:, None]).squeeze(-1)
    focal = -((1 - log_p_y.exp()) ** 2.0) * log_p_y
    focal.sum().backward()
    np.testing.assert_allclose(grad, logits.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_tofu_gamma_zero_has_gem_linear_gradient(batch):
    z, y = batch
    _, tofu_grad = value_and_grad(tofu_per_token, z, y, gamma=0.0, beta=0.6)
    _, gem_grad = value_and_grad(gem_per_token, z, y, beta=0.6, h="linear")
    np.testing.assert_allclose(tofu_grad, gem_grad, rtol=1e-10, atol=1e-12)


def test_gem_beta_one_has_cross_entropy_gradient(batch):
    z, y = batch
    _, gem_grad = value_and_grad(gem_per_token, z, y, beta=1.0)
    _, ce_grad = value_and_grad(lambda logits, labels: F.cross_entropy(logits, labels, reduction="none"), z, y)
    np.testing.assert_allclose(gem_grad, ce_grad, rtol=1e-10, atol=1e-12)


def test_focal_weight_shape():
    p = torch.linspace(1e-6, 1 - 1e-6, 1001, dtype=torch.float64)
    weight = tofu_focal_weight(p.log(), 3.0)
    assert torch.all(weight >= 0)
    assert tofu_focal_weight(torch.tensor(0.99).log(), 3.0) < 1e-5
    assert tofu_focal_weight(torch.tensor(0.01).log(), 3.0) > 0.9
    # γ < 1 at p = 1: the tilt term's limit is 0, not NaN
    assert tofu_focal_weight(torch.tensor([0.0]), 0.5).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "spec", [LossSpec("tofu", 0.8, 3.0), LossSpec("gem", 0.7), LossSpec("gem", 0.7, h="logsigmoid")]
)
def test_extreme_logits_stay_finite(dtype, spec):
    torch.manual_seed(0)
    logits = (torch.randn(6, 50) * 1e4).clamp(-1e4, 1e4).to(dtype).requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 4, -100])
    loss = spec(logits, labels)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("fn", [tofu_per_token, gem_per_token])
def test_masked_rows_give_zero_loss_and_gradient(fn):
    logits = torch.randn(4, 9, requires_grad=True)
    loss = fn(logits, torch.full((4,), -100))
    loss.sum().backward()
    assert torch.equal(loss, torch.zeros(4))
    assert torch.equal(logits.grad, torch.zeros(4, 9))


def test_loss_spec_rejects_unknown_gem_weighting():
    with pytest.raises(ValueError, match="gem h must be one of"):
        gem_per_token(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), h="square")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("spec", [LossSpec("tofu", 0.8, 3.0), LossSpec("gem", 0.7), LossSpec("ce")])
def test_low_precision_logits_are_computed_in_fp32(batch, dtype, spec):
    """bf16/fp16 logits are upcast: the value is the float64 closed form of the rounded logits, to fp32 precision."""
    z, y = batch
    logits = torch.tensor(z).to(dtype)
    loss = spec(logits, torch.tensor(y))
    assert loss.dtype == torch.float32
    exact = spec(logits.double(), torch.tensor(y))
    torch.testing.assert_close(loss.double(), exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    ("call", "key"),
    [
        (lambda z, y, v: tofu_per_token(z, y, gamma=v), "gamma"),
        (lambda z, y, v: tofu_per_token(z, y, beta=v), "beta"),
        (lambda z, y, v: gem_per_token(z, y, beta=v), "beta"),
        (lambda z, y, v: tofu_focal_weight(z[:, 0], v), "gamma"),
        (lambda z, y, v: LossSpec("tofu", beta=v), "beta"),
        (lambda z, y, v: LossSpec("tofu", gamma=v), "gamma"),
    ],
)
def test_non_finite_hyper_parameters_are_refused(call, key, bad):
    z, y = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=f"`{key}` must be a finite number"):
        call(z, y, bad)
