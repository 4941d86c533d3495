"""Tiny offline policy for the diversity-callback tests: a word-level tokenizer with a chat template and a 2-layer
Llama, saved to a local folder so that test processes (and `accelerate launch` children) can load it without the Hub.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback

from divalign import smoke

WORDS = [
    "the", "a", "cat", "dog", "bird", "fish", "sat", "ran", "flew", "swam", "on", "under", "over", "near", "mat",
    "log", "tree", "pond", "red", "blue", "green", "small", "big", "quick", "lazy", "happy", "sad", "today",
    "yesterday", "tomorrow", "and", "or", "but", "very", "not", "is", "was", "will", "be", "it", "he", "she", "they",
    "we", "you", "what", "where", "why", "how", "who", "tell", "me", "about", "story", "write", "poem", "short",
    "long", "one", "two", "three",
]  # fmt: skip
SPECIAL = ["<pad>", "<unk>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PROMPTS = ["tell me about the cat", "write a short poem", "where is the dog", "what is blue", "tell me a story"]
REPLIES = [
    "the cat sat on the mat",
    "a small bird flew over the tree",
    "the dog ran near the pond",
    "it is the blue fish",
    "one happy dog sat under a tree",
]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `WORDS` with pad/eos/unk and role markers as special tokens."""
    vocab = {token: i for i, token in enumerate([*SPECIAL, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[3:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """The smoke-test Llama, with attention dropout on so that training consumes the global RNG: the tests then
    notice an evaluation that leaks RNG state into the training trajectory."""
    return smoke.build_model(
        tokenizer, seed, max_position_embeddings=256, attention_dropout=0.1, tie_word_embeddings=True
    )


def save_tiny_policy(path: str | Path) -> Path:
    """Write tokenizer + model to `path` (loadable with `from_pretrained`) and return it."""
    path = Path(path)
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def train_records(n: int = 32) -> list[dict]:
    """Conversational SFT records (`messages`) cycling over the tiny prompt/reply pairs."""
    return [
        {
            "messages": [
                {"role": "user", "content": PROMPTS[i % len(PROMPTS)]},
                {"role": "assistant", "content": REPLIES[(i * 3) % len(REPLIES)]},
            ]
        }
        for i in range(n)
    ]


def write_probe_prompts(path: Path, count: int = 3) -> Path:
    """The first ``count`` of :data:`PROMPTS` as a probe file (one ``{"prompt": ...}`` JSON line each)."""
    path.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in PROMPTS[:count]))
    return path


class InterruptAt(TrainerCallback):
    """Stop a run the hard way after `step` (the checkpoint written before it is all that survives)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt
