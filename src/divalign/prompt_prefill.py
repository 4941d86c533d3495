"""Prefill each prompt once for all of its samples.

`generate` prefills every row of its batch: a prompt sampled K times is encoded K times, and for short answers the
prompt's tokens (a chat template's system text included) are most of the work. Here each prompt's key/value cache is
computed once and repeated K times, and `generate` continues from it. The logits are the row-by-row prefill's up to
float rounding (other matrix shapes), so the seeded samples are too, but for a draw that falls within rounding of a
token's boundary in the CDF: on the tiny test model they are identical (tests/test_generation.py); on SmolLM2, 24 of
`make demo-real`'s 5,880 samples changed from one token on (README, its "Timing").
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from . import compat


def accepts_position_ids(model: Any) -> bool:
    """Whether the (PEFT-unwrapped) model's forward takes `position_ids`, as `generate` checks before passing them."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "position_ids" in inspect.signature(target.forward).parameters


@torch.no_grad()
def prefilled_prompt_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, repeats: int) -> Any:
    """The cache of every prompt token but the last, computed once per (left-padded) prompt row and repeated
    `repeats` times row by row, for `generate` to start from; `generate` needs one uncached token to begin with.

    None where there is nothing to share (one sample per prompt, one-token prompts) or the model returns no cache
    that can be repeated: `generate` then prefills every row itself.
    """
    if repeats < 2 or input_ids.shape[1] < 2:
        return None
    mask = attention_mask[:, :-1]
    inputs: dict[str, Any] = {"input_ids": input_ids[:, :-1], "attention_mask": mask, "use_cache": True}
    if accepts_position_ids(model):
        # what `generate` derives from the mask: left padding does not shift a prompt's positions
        inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_(min=0)
    cache = compat.model_output_cache(model(**inputs))
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(repeats)
    return cache
