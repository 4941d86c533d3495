"""How text becomes the policy's tokens and back, the same for every sampler (`divalign.generation`, vLLM in
`divalign.evaluation.sampling`, the training callback):

- **rendering**: a prompt goes through the policy's chat template with TRL's `apply_chat_template` (generation
  prompt added, or the final assistant turn continued); a tokenizer without a template gets the plain text with its
  special tokens, as SFT tokenization adds them;
- **stopping**: the tokenizer's EOS plus every EOS id of the checkpoint's generation config (chat models often stop
  on several); a completion is cut before the first of them or the pad token, then decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Prompt = str | list[dict[str, Any]]


def uses_chat_template(tokenizer: Any) -> bool:
    """Whether the policy reads its prompts through a chat template (a plain prompt then is one user turn)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(prompt: Prompt, tokenizer: Any) -> str:
    """The prompt as the policy sees it: through its chat template (TRL's `apply_chat_template`: generation prompt
    after a user turn, continuation of a final assistant turn) when it has one, else the plain text."""
    if uses_chat_template(tokenizer):
        from trl.data_utils import apply_chat_template

        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return apply_chat_template({"prompt": messages}, tokenizer)["prompt"]
    if not isinstance(prompt, str):
        raise ValueError(
            "its tokenizer has no chat template, so chat-message prompts cannot be rendered; use plain string "
            "prompts or a model with a chat template"
        )
    return prompt


def encode_prompt(prompt: Prompt, tokenizer: Any) -> list[int]:
    """Token ids of the rendered prompt. A chat template already holds BOS and the other special tokens; plain
    text gets them the way SFT tokenization adds them."""
    templated = uses_chat_template(tokenizer)
    return list(tokenizer(render_prompt(prompt, tokenizer), add_special_tokens=not templated)["input_ids"])


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """EOS ids of the tokenizer and of a checkpoint's generation config, tokenizer's first."""
    ids: list[int] = []
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(generation_config, "eos_token_id", None)):
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError("Sampling needs an EOS token, and neither the tokenizer nor the model's config defines one")
    return ids


def pad_token_id(tokenizer: Any, stop_ids: Sequence[int]) -> int:
    """The tokenizer's pad token, else the first stop token (it ends a completion anyway)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else int(stop_ids[0])


def generated_tokens(ids: Sequence[int], stop_ids: Sequence[int] | set[int]) -> int:
    """Tokens `generate` produced for one raw completion: up to and including its first stop or pad token (the pads
    after it only fill the batch), all of them when it ran to `max_new_tokens`."""
    kept = len(cut_at_stop(ids, stop_ids))
    return kept + (kept < len(ids))


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int] | set[int]) -> list[int]:
    """The completion's tokens before its first stop token: a stop or pad id left in would count as an n-gram."""
    stops = set(stop_ids)
    for position, token in enumerate(ids):
        if token in stops:
            return list(ids[:position])
    return list(ids)


def decode_group(tokenizer: Any, group: Sequence[Sequence[int]]) -> list[str]:
    """Texts of one prompt's completions (special tokens skipped)."""
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in group]
