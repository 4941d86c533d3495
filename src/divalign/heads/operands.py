"""What the loss head multiplies: the LM head's effective weight and bias, with PEFT's wrappers resolved.

The loss head never calls the LM head module (that would build the full logits); it reads a weight and a bias. Under
PEFT the module on the head is a wrapper whose ``.weight`` is not what its forward uses, so each supported wrapper is
resolved to the operands its forward computes with, exactly:

- LoRA (``lm_head`` in ``target_modules``): ``W x + b + s·B A dropout(x)``. The adapter enters the head as extra hidden
  columns, ``logits = [x, s·A dropout(x)] · [W, B]ᵀ + b (+ s·b_B)``, exact with dropout (the same dropout mask is drawn
  once and used by both the loss and its gradient) and for several active adapters (one block of columns each).
- ``modules_to_save: [lm_head]``: the active adapter's trainable copy of the head.
- trainable tokens tied to the head (``TrainableTokensConfig``, or LoRA's ``trainable_token_indices``): PEFT's merged
  weight (and, as PEFT's forward does, no bias).

Anything else PEFT can put on the head (DoRA and the other LoRA variants, IA³, LoHa, ...) is refused with a clear
error when the trainer is built, rather than silently trained through the frozen base weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

try:  # PEFT is optional for the loss head itself
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper, TrainableTokensWrapper
except ImportError:  # pragma: no cover - exercised only without peft installed
    LoraLinear = TrainableTokensLayer = BaseTunerLayer = AuxiliaryTrainingWrapper = ()
    ModulesToSaveWrapper = TrainableTokensWrapper = ()


class UnsupportedHeadError(ValueError):
    """The LM head is wrapped in a way the loss head cannot reproduce exactly."""


@dataclass(frozen=True)
class LoraColumns:
    """One active LoRA adapter on the head: ``scaling · up(down(dropout(x)))`` added to the logits."""

    down: nn.Module
    up: nn.Module
    dropout: nn.Module
    scaling: float


@dataclass(frozen=True)
class HeadOperands:
    """The head as the loss head computes it: ``[x, lora columns...] · [weight, up weights...]ᵀ + bias``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    lora: tuple[LoraColumns, ...] = ()

    def parameters(self) -> Iterator[torch.Tensor]:
        """Every tensor read directly (not through a module call): what ZeRO-3 must gather."""
        yield from (t for t in (self.weight, self.bias) if t is not None)
        for term in self.lora:
            yield from (t for t in (term.up.weight, term.up.bias) if t is not None)

    def project_inputs(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(hidden, weight, bias)`` for a plain ``hidden @ weight.T + bias`` head with the LoRA terms folded in."""
        hidden_parts, weight_parts, bias = [hidden], [self.weight], self.bias
        for term in self.lora:
            down = term.down(term.dropout(hidden.to(term.down.weight.dtype)))
            hidden_parts.append((down * term.scaling).to(hidden.dtype))
            weight_parts.append(term.up.weight.to(self.weight.dtype))
            if term.up.bias is not None:  # PEFT's lora_bias: scaling · b_B joins the head bias
                extra = (term.up.bias * term.scaling).to(self.weight.dtype)
                bias = extra if bias is None else bias + extra
        if len(hidden_parts) == 1:
            return hidden, self.weight, bias
        return torch.cat(hidden_parts, dim=-1), torch.cat(weight_parts, dim=1), bias


def _lora_operands(head: nn.Module) -> HeadOperands:
    base = resolve_head(head.get_base_layer())
    if head.disable_adapters or head.merged:  # the forward is the base layer alone (merged weights live there)
        return base
    active = [name for name in head.active_adapters if name in head.lora_A]
    variants = [name for name in active if name in head.lora_variant]
    if variants:
        kind = type(head.lora_variant[variants[0]]).__name__
        raise UnsupportedHeadError(
            f"LoRA adapter {variants[0]!r} on the LM head uses a LoRA variant ({kind}, e.g. `use_dora`), which the "
            "chunked loss head cannot reproduce exactly. Use plain LoRA on the head, `modules_to_save: [lm_head]`, "
            "or leave the head out of `target_modules`."
        )
    terms = tuple(
        LoraColumns(head.lora_A[name], head.lora_B[name], head.lora_dropout[name], float(head.scaling[name]))
        for name in active
    )
    return HeadOperands(base.weight, base.bias, base.lora + terms)


def _trainable_tokens_operands(layer: nn.Module) -> HeadOperands:
    if layer.disable_adapters or layer.merged or not layer.active_adapters:
        return resolve_head(layer.base_layer)
    # PEFT's forward on a (tied) linear head: F.linear(x, merged weight), without the base bias
    return HeadOperands(layer.get_merged_weights(layer.active_adapters), None)


def resolve_head(head: nn.Module) -> HeadOperands:
    """The operands ``head``'s own forward computes with; raises :class:`UnsupportedHeadError` where they cannot be
    reproduced exactly."""
    if ModulesToSaveWrapper and isinstance(head, ModulesToSaveWrapper):
        if head.disable_adapters or not head.active_adapters:
            return resolve_head(head.original_module)
        return resolve_head(head.modules_to_save[head.active_adapters[0]])
    if TrainableTokensWrapper and isinstance(head, TrainableTokensWrapper):  # LoRA's `trainable_token_indices`
        return _trainable_tokens_operands(head.token_adapter)
    if TrainableTokensLayer and type(head) is TrainableTokensLayer:  # PEFT's trainable-tokens method
        return _trainable_tokens_operands(head)
    if LoraLinear and type(head) is LoraLinear:
        return _lora_operands(head)
    if (BaseTunerLayer and isinstance(head, BaseTunerLayer)) or (
        AuxiliaryTrainingWrapper and isinstance(head, AuxiliaryTrainingWrapper)
    ):
        raise UnsupportedHeadError(
            f"the LM head is wrapped by PEFT as {type(head).__module__}.{type(head).__name__}, which the chunked loss "
            "head cannot reproduce exactly. Supported on the head: plain LoRA (`lm_head` in `target_modules`), "
            "`modules_to_save: [lm_head]` and tied `trainable_token_indices`; otherwise leave the head out of the "
            "adapter."
        )
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise UnsupportedHeadError(
            f"the LM head ({type(head).__name__}) has no floating-point weight for the loss head to multiply "
            "(a quantized head?); keep the LM head unquantized"
        )
    return HeadOperands(head.weight, getattr(head, "bias", None))
