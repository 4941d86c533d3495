"""Tiny chat checkpoints for the evaluation tests: a word-level tokenizer with a plain chat template and a 1-layer,
hidden-16 Llama, built with divalign.smoke's builders and saved like a real checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from divalign.smoke import build_model, word_level_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ONE_LAYER = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 1}  # fmt: skip


def save_chat_checkpoint(directory: Path, words: Sequence[str], seed: int) -> Path:
    """``words`` (the special tokens first, in :data:`SPECIALS` order) as the vocabulary; weights drawn from ``seed``."""
    assert list(words[: len(SPECIALS)]) == SPECIALS, "the pad/BOS/EOS/unk ids are 0-3"
    tokenizer = word_level_tokenizer(
        words, CHAT_TEMPLATE, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    build_model(tokenizer, seed, **ONE_LAYER).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def save_reward_model(directory: Path, tokenizer: Any) -> Path:
    """A sequence-classification checkpoint (one logit, 1 layer, weights from seed 0) with ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), num_labels=1, pad_token_id=tokenizer.pad_token_id, **ONE_LAYER)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)
