"""Tiny local model, tokenizer and dataset for the offline smoke recipe and the tests (no Hub access).

python -m divalign.smoke runs/smoke     # then: python -m divalign.train recipes/smoke/tofu_smoke.yaml
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = [f"w{i}" for i in range(40)] + ["user", "assistant", "say", "a", "word", ":"]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : "
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }} </s>{% endgeneration %}"
    "{% else %}{{ message['content'] }} </s>{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    """A 2-layer, hidden-32 Llama sized to ``tokenizer``; ``config_overrides`` go to its ``LlamaConfig``."""
    torch.manual_seed(seed)
    config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
    }
    return LlamaForCausalLM(LlamaConfig(**{**config, **config_overrides}))


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


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


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
