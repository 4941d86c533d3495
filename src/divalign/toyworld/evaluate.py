"""Score a causal LM against the toy world's truth: exact answer probabilities and sampled answers.

The exact scores need one forward pass over every (prompt, valid answer) pair; the samples need ``generate``. Both
render a prompt in either format: ``chat`` (the SFT chat template, what a fine-tuned model is used with) or ``plain``
(the pretraining format, where the base model's knowledge is measured directly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from divalign.toyworld.truth_metrics import ExactMetrics, SampledMetrics, exact_metrics, sampled_metrics
from divalign.toyworld.world import Prompt, ToyWorld

PromptFormat = Literal["chat", "plain"]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, fmt: PromptFormat) -> list[int]:
    """Token ids of the context a model answers from, in the chat or the plain pretraining format."""
    if fmt == "chat":
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}], add_generation_prompt=True)
        return list(rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered)
    text = ToyWorld.plain_prefix(prompt.text)
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def _sequence_logprobs(
    model: PreTrainedModel, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int
) -> list[float]:
    """``log P(target | context)`` for each ``(context, target)`` row, batched with right padding."""
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(c) + len(t) for c, t in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        target_mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, (context, target) in enumerate(chunk):
            ids[i, : len(context) + len(target)] = torch.tensor(context + target)
            target_mask[i, len(context) : len(context) + len(target)] = True
        attention = (torch.arange(width) < torch.tensor([len(c) + len(t) for c, t in chunk])[:, None]).long()
        logits = model(input_ids=ids, attention_mask=attention).logits.float()
        # position j predicts token j + 1
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        out.extend((log_probs * target_mask[:, 1:]).sum(-1).tolist())
    return out


def answer_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    fmt: PromptFormat,
    batch_size: int = 512,
) -> list[dict[str, float]]:
    """Exact ``P(answer + EOS | prompt)`` of every valid answer of every prompt."""
    rows = []
    for prompt in prompts:
        context = prompt_ids(tokenizer, prompt, fmt)
        for answer in prompt.answers:
            rows.append((context, [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]))
    log_probs = iter(_sequence_logprobs(model, rows, tokenizer.pad_token_id, batch_size))
    return [{answer: float(torch.tensor(next(log_probs)).exp()) for answer in prompt.answers} for prompt in prompts]


@torch.no_grad()
def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    fmt: PromptFormat,
    num_samples: int,
    max_new_tokens: int = 6,
) -> list[str]:
    """``num_samples`` answers sampled at temperature 1 from the full distribution (no top-k / top-p).

    A sample that hits no EOS within ``max_new_tokens`` is returned with a trailing marker so it never counts as valid.
    """
    context = torch.tensor([prompt_ids(tokenizer, prompt, fmt)])
    generated = model.generate(
        input_ids=context,
        attention_mask=torch.ones_like(context),
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )[:, context.shape[1] :].tolist()
    answers = []
    for row in generated:
        if tokenizer.eos_token_id in row:
            answers.append(tokenizer.decode(row[: row.index(tokenizer.eos_token_id)]).strip())
        else:
            answers.append(tokenizer.decode(row).strip() + " <no-eos>")
    return answers


@dataclass(frozen=True)
class SplitScores:
    """Means over the prompts of one split (seen or held-out) of the exact and (optionally) the sampled metrics."""

    exact: dict[str, float]
    sampled: dict[str, float] | None


def mean_metrics(rows: Sequence[ExactMetrics] | Sequence[SampledMetrics]) -> dict[str, float]:
    """Field-wise mean of per-prompt metric records."""
    return {f.name: sum(float(getattr(r, f.name)) for r in rows) / len(rows) for f in fields(rows[0])}


def score_split(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world: ToyWorld,
    prompts: Sequence[Prompt],
    fmt: PromptFormat,
    num_samples: int,
    sample: bool = True,
) -> SplitScores:
    """Exact (and, with ``sample``, sampled) metrics of ``model`` on ``prompts``, averaged over prompts.

    ``num_samples`` is both the number of samples drawn per prompt and the K of the exact expected coverage, so the
    two coverages estimate the same quantity.
    """
    tail_rank = world.config.tail_start_rank
    exact = [
        exact_metrics(probs, p.truth(), k=num_samples, tail=p.answers[tail_rank:])
        for p, probs in zip(prompts, answer_probabilities(model, tokenizer, prompts, fmt), strict=True)
    ]
    sampled = None
    if sample:
        sampled = mean_metrics(
            [sampled_metrics(sample_answers(model, tokenizer, p, fmt, num_samples), p.truth()) for p in prompts]
        )
    return SplitScores(mean_metrics(exact), sampled)


def load_model(
    path: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved model in fp32 eval mode and its tokenizer (from ``tokenizer_path`` when the checkpoint has none)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, tokenizer


def evaluate_model(
    path: str | Path,
    world: ToyWorld,
    fmt: PromptFormat = "chat",
    num_samples: int = 32,
    seed: int = 0,
    sample: bool = True,
    tokenizer_path: str | Path | None = None,
) -> dict[str, dict]:
    """Load a saved model and score it on the seen and held-out prompts: ``{split: {"exact":…, "sampled":…}}``."""
    torch.manual_seed(seed)
    model, tokenizer = load_model(path, tokenizer_path)
    return {
        split: asdict(score_split(model, tokenizer, world, prompts, fmt, num_samples, sample))
        for split, prompts in (("seen", world.seen_prompts), ("heldout", world.heldout_prompts))
    }
