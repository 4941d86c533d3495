"""Per-token diversity-preserving SFT losses: TOFU and GEM.

Both act on a 2-D block of logits ``(N, V)`` and its labels ``(N,)``; rows whose label is ``ignore_index`` give a zero
loss and a zero gradient. Logits are computed on in :func:`loss_dtype`: bf16/fp16/fp32 in fp32 (so low-precision inputs
and logits up to ±1e4 stay finite), float64 in float64. NaN or infinite hyper-parameters are refused.

These are the plain PyTorch references: they build ``(N, V)`` intermediates, so call them on chunks of token rows
(see :mod:`divalign.heads.chunked`), never on a whole ``(batch * seq, V)`` block. The gradients, the special cases
(β = 1 is focal loss, γ = 0 is GEM-linear) and the numerics of TOFU's weight are derived in docs/losses.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .hyperparameters import require_exponent, require_temperature

IGNORE_INDEX = -100
GemWeighting = Literal["linear", "logsigmoid"]
GEM_WEIGHTINGS: tuple[str, ...] = ("linear", "logsigmoid")


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype losses are computed in for inputs of ``dtype``: float64 stays float64, anything else is fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in :func:`loss_dtype` of their dtype."""
    return logits.to(loss_dtype(logits.dtype))


def _target_log_probs(log_probs: torch.Tensor, safe_labels: torch.Tensor) -> torch.Tensor:
    return log_probs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)


def _split_labels(labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    mask = labels != ignore_index
    return mask, torch.where(mask, labels, torch.zeros_like(labels))


def tofu_focal_weight(log_p: torch.Tensor, gamma: float) -> torch.Tensor:
    """TOFU's token weight ``g(p, γ) = (1 − p)^γ − γ · p · (1 − p)^(γ−1) · log p``, from ``log p``.

    Works from log-probabilities because ``log(p)`` of an underflowed ``p`` is ``-inf`` and turns the product into NaN.
    ``1 − p`` comes from ``expm1`` so it keeps its precision when ``p`` is close to 1.
    """
    gamma = require_exponent("gamma", gamma)
    p = log_p.exp()
    one_minus_p = -torch.expm1(log_p)
    if gamma == 0:
        return torch.ones_like(log_p)
    focal = one_minus_p.pow(gamma)
    # (1 − p)^(γ−1) blows up at p = 1 when γ < 1, where the whole term tends to 0 (like (1 − p)^γ)
    log_one_minus_p = torch.log1p(-p.clamp(max=1.0))
    tilt = torch.exp((gamma - 1.0) * log_one_minus_p) * (-p * log_p)
    tilt = torch.where(one_minus_p > 0, tilt, torch.zeros_like(tilt))
    return focal + gamma * tilt


def tofu_per_token(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 3.0,
    beta: float = 0.8,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Tempered focal loss (TOFU), per token.

    ``L = − sg(g(p_y, γ)) · β · log softmax(z / β)_y`` with ``g`` from :func:`tofu_focal_weight`; its gradient
    w.r.t. the logits is ``g(p_y, γ) · (softmax(z / β) − e_y)``.

    Klypa & Cherednichenko, "Diversity in Large Language Models under Supervised Fine-Tuning", arXiv:2605.00195.
    The authors fix ``γ = 3.0`` and ``β = 0.8`` for every model and benchmark.
    """
    gamma, beta = require_exponent("gamma", gamma), require_temperature("beta", beta)
    mask, safe_labels = _split_labels(labels, ignore_index)
    z = upcast(logits)
    log_p_y = _target_log_probs(F.log_softmax(z, dim=-1), safe_labels)
    log_q_y = _target_log_probs(F.log_softmax(z / beta, dim=-1), safe_labels)
    weight = tofu_focal_weight(log_p_y.detach(), gamma)
    loss = -weight * beta * log_q_y
    return torch.where(mask, loss, torch.zeros_like(loss))


def gem_per_token(
    logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 0.7,
    h: GemWeighting = "linear",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Entropy-regularised distribution matching (GEM), per token.

    ``L = Σ_v sg(q_v · w_v) · (log p_v − log p_y)`` with ``q = softmax(z / β)``; ``w_v = 1`` for ``h="linear"``
    (gradient ``q − e_y``) and ``w_v = sigmoid(0.01 · (z_v − z_y))`` for ``h="logsigmoid"``. The value can be
    negative; log the plain NLL beside it to read progress.

    Li et al., "Preserving Diversity in Supervised Fine-Tuning of Large Language Models", ICLR 2025,
    arXiv:2408.16673. ``h="logsigmoid"`` follows the authors' training scripts.
    """
    if h not in GEM_WEIGHTINGS:
        raise ValueError(f"gem h must be one of {GEM_WEIGHTINGS}, got {h!r}")
    beta = require_temperature("beta", beta)
    mask, safe_labels = _split_labels(labels, ignore_index)
    z = upcast(logits)
    log_p = F.log_softmax(z, dim=-1)
    log_p_y = _target_log_probs(log_p, safe_labels)
    weights = F.softmax(z.detach() / beta, dim=-1)
    if h == "logsigmoid":
        z_y = _target_log_probs(z.detach(), safe_labels)
        weights = weights * torch.sigmoid(0.01 * (z.detach() - z_y.unsqueeze(-1)))
    loss = (weights * (log_p - log_p_y.unsqueeze(-1))).sum(-1)
    return torch.where(mask, loss, torch.zeros_like(loss))


def cross_entropy_per_token(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Plain next-token negative log-likelihood, per token (zero where the label is ignored)."""
    return F.cross_entropy(upcast(logits), labels, ignore_index=ignore_index, reduction="none")


@dataclass(frozen=True)
class LossSpec:
    """One of the per-token losses with its hyper-parameters; call it as ``spec(logits, labels) -> Tensor[N]``.

    A named spec (rather than a bare callable) lets a fused kernel recognise the loss it implements.
    """

    name: Literal["ce", "tofu", "gem"]
    beta: float = 1.0
    gamma: float = 0.0
    h: GemWeighting = "linear"

    def __post_init__(self):
        require_temperature("beta", self.beta)
        require_exponent("gamma", self.gamma)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.name == "tofu":
            return tofu_per_token(logits, labels, gamma=self.gamma, beta=self.beta)
        if self.name == "gem":
            return gem_per_token(logits, labels, beta=self.beta, h=self.h)
        if self.name == "ce":
            return cross_entropy_per_token(logits, labels)
        raise ValueError(f"unknown loss {self.name!r}; expected 'ce', 'tofu' or 'gem'")
