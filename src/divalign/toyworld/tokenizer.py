"""A word-level tokenizer for the toy world, built locally and wrapped as a ``PreTrainedTokenizerFast``.

One token per whitespace-separated word keeps the model tiny and makes every answer a short, unambiguous token
sequence (so its exact probability is a product of a few next-token probabilities). The chat template is the *new*
format that SFT has to teach: the role markers never occur in the pretraining corpus.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

from divalign.smoke import word_level_tokenizer
from divalign.toyworld.world import PLAIN_FORMATS, ToyWorld

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
USER, ASSISTANT = "<|user|>", "<|assistant|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, USER, ASSISTANT)

# `{% generation %}` marks the assistant tokens (answer + EOS) so TRL's `assistant_only_loss` works too. The prompt
# rendered with `add_generation_prompt=True` is a token prefix of prompt + completion, as TRL's prompt/completion
# tokenisation requires.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|> {% generation %}{{ message['content'] }} {{ eos_token }}{% endgeneration %} "
    "{% else %}"
    "<|{{ message['role'] }}|> {{ message['content'] }} "
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def world_vocabulary(world: ToyWorld) -> list[str]:
    """Every word the world can produce, sorted so the vocabulary is deterministic."""
    words: set[str] = {w for fmt in PLAIN_FORMATS for w in fmt.split() if w != "{prompt}"}
    for prompt in world.prompts:
        words.update(prompt.text.split())
        for answer in prompt.answers:
            words.update(answer.split())
    return sorted(words)


def build_tokenizer(world: ToyWorld, extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the world's words, with BOS/EOS/PAD/UNK, chat role tokens and a chat template.

    No post-processor adds BOS/EOS automatically: the chat template and the pretraining code place them explicitly,
    so a text tokenised twice never gets a second BOS.
    """
    words = sorted(set(world_vocabulary(world)) | set(extra_words))
    return word_level_tokenizer(
        [*SPECIAL_TOKENS, *words],
        CHAT_TEMPLATE,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT],
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
