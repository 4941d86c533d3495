"""Tiny local model, tokenizer and dataset for the offline smoke recipe and the tests (no Hub access).

python -m divalign.smoke runs/smoke     # then: python -m divalign.train recipes/smoke/tofu_smoke.yaml
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .jsonl import write_jsonl

WORDS = [f"w{i}" for i in range(40)] + ["user", "assistant", "say", "a", "word", ":"]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : "
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }} </s>{% endgeneration %}"
    "{% else %}{{ message['content'] }} </s>{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


# The tiny Llama of the smoke assets; the toy world's base model overrides its sizes (divalign.toyworld.pretrain)
TINY_LLAMA = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}


def word_level_tokenizer(vocabulary: Sequence[str], chat_template: str, **options: Any) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word of ``vocabulary`` (ids in its order; ``options["unk_token"]`` stands
    for any other word), with ``chat_template``; ``options`` (the special tokens, padding side, ...) go to
    ``PreTrainedTokenizerFast``. Built locally: no Hub."""
    vocab = {token: index for index, token in enumerate(vocabulary)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=options["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **options)
    tokenizer.chat_template = chat_template
    return tokenizer


def build_tokenizer() -> PreTrainedTokenizerFast:
    return word_level_tokenizer(
        SPECIALS + WORDS, CHAT_TEMPLATE, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def llama_config(tokenizer: PreTrainedTokenizerFast, **overrides: Any) -> LlamaConfig:
    """:data:`TINY_LLAMA` sized to ``tokenizer`` (its vocabulary and pad/BOS/EOS ids), with ``overrides``."""
    special_ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return LlamaConfig(**{**TINY_LLAMA, "vocab_size": len(tokenizer), **special_ids, **overrides})


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    """A 2-layer, hidden-32 Llama sized to ``tokenizer``, initialised from ``seed``; ``config_overrides`` go to its
    ``LlamaConfig``."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(tokenizer, **config_overrides))


def save_tiny_model(directory: Path, seed: int = 0) -> Path:
    tokenizer = build_tokenizer()
    build_model(tokenizer, seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def prompt_completion_rows(count: int = 32, seed: int = 0) -> list[dict]:
    """Conversational prompt/completion rows: 'say a word' answered by a few words from a skewed distribution."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        answer = " ".join(rng.choices(WORDS[:40], weights=[1 / (i + 1) for i in range(40)], k=3))
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"say a word {rng.choice(WORDS[:5])}"}],
                "completion": [{"role": "assistant", "content": answer}],
            }
        )
    return rows


def messages_rows(count: int = 32, seed: int = 0) -> list[dict]:
    """The same conversations as :func:`prompt_completion_rows`, as one ``messages`` list per row."""
    return [{"messages": row["prompt"] + row["completion"]} for row in prompt_completion_rows(count, seed)]


def build_smoke_assets(directory: Path, rows: int = 64) -> Path:
    """Write ``model/`` (tiny Llama + tokenizer) and ``train.jsonl`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    save_tiny_model(directory / "model")
    write_jsonl(directory / "train.jsonl", prompt_completion_rows(rows))
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the offline smoke-recipe model and data.")
    parser.add_argument("out", nargs="?", default="runs/smoke", type=Path)
    args = parser.parse_args(argv)
    print(f"smoke assets in {build_smoke_assets(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
