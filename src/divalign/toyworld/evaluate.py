"""Score a causal LM against the toy world's truth: exact answer probabilities and sampled answers.

The exact scores need one forward pass over every (prompt, valid answer) pair, and give the probabilities at any
sampling temperature from the same logits (``P_T(answer + EOS | prompt)`` is the product of ``softmax(z / T)`` over
its tokens: exactly what sampling at temperature T draws). The samples go through `divalign.generation`, the
sampling path of the diversity callback and ``divalign eval``. Both render a prompt in either format: ``chat`` (the
SFT chat template, what a fine-tuned model is used with) or ``plain`` (the pretraining format, where the base
model's knowledge is measured directly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from divalign.generation import SamplingSettings, encode_prompt, sample_completions
from divalign.toyworld.truth_metrics import ExactMetrics, SampledMetrics, exact_metrics, sampled_metrics
from divalign.toyworld.world import Prompt, ToyWorld

PromptFormat = Literal["chat", "plain"]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, fmt: PromptFormat) -> list[int]:
    """Token ids of the context a model answers from, in the chat or the plain pretraining format."""
    if fmt == "chat":
        return encode_prompt(prompt.text, tokenizer)
    text = ToyWorld.plain_prefix(prompt.text)
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def _sequence_logprobs(
    model: PreTrainedModel,
    rows: list[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
    temperatures: Sequence[float] = (1.0,),
) -> dict[float, list[float]]:
    """``log P_T(target | context)`` for each ``(context, target)`` row and temperature T, batched with right
    padding: one forward pass, the logits divided by each T."""
    out: dict[float, list[float]] = {t: [] for t in temperatures}
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
        for t in temperatures:
            # position j predicts token j + 1
            log_probs = torch.log_softmax(logits[:, :-1] / t, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            out[t].extend((log_probs * target_mask[:, 1:]).sum(-1).tolist())
    return out


def answer_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    fmt: PromptFormat,
    batch_size: int = 512,
    temperatures: Sequence[float] = (1.0,),
) -> dict[float, list[dict[str, float]]]:
    """Exact ``P_T(answer + EOS | prompt)`` of every valid answer of every prompt, at each sampling temperature T."""
    rows = []
    for prompt in prompts:
        context = prompt_ids(tokenizer, prompt, fmt)
        for answer in prompt.answers:
            rows.append((context, [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]))
    by_temperature = _sequence_logprobs(model, rows, tokenizer.pad_token_id, batch_size, temperatures)
    out = {}
    for t, values in by_temperature.items():
        log_probs = iter(values)
        out[t] = [{a: float(torch.tensor(next(log_probs)).exp()) for a in prompt.answers} for prompt in prompts]
    return out


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    fmt: PromptFormat,
    num_samples: int,
    seed: int = 0,
    max_new_tokens: int = 6,
) -> list[list[str]]:
    """``num_samples`` answers per prompt sampled at temperature 1 from the full distribution (no top-k / top-p),
    through `divalign.generation` (a prompt's noise keyed by ``seed`` and its index in ``prompts``).

    A sample that hits no EOS within ``max_new_tokens`` is returned with a trailing marker so it never counts as valid.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    settings = SamplingSettings(num_samples=num_samples, max_new_tokens=max_new_tokens, seed=seed)
    ids = [prompt_ids(tokenizer, prompt, fmt) for prompt in prompts]
    # cut only at EOS here: a row that reached max_new_tokens without one is kept whole and marked below
    groups = sample_completions(model, ids, settings, [eos], pad, cut=False)
    return [[_answer(tokenizer, row, eos) for row in groups[index]] for index in range(len(prompts))]


def _answer(tokenizer: PreTrainedTokenizerBase, row: list[int], eos: int) -> str:
    if eos in row:
        return tokenizer.decode(row[: row.index(eos)]).strip()
    return tokenizer.decode(row).strip() + " <no-eos>"


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
    seed: int = 0,
) -> SplitScores:
    """Exact (and, with ``sample``, sampled) metrics of ``model`` on ``prompts``, averaged over prompts.

    ``num_samples`` is both the number of samples drawn per prompt and the K of the exact expected coverage, so the
    two coverages estimate the same quantity.
    """
    exact = exact_rows(world, prompts, answer_probabilities(model, tokenizer, prompts, fmt)[1.0], num_samples)
    sampled = None
    if sample:
        answers = sample_answers(model, tokenizer, prompts, fmt, num_samples, seed=seed)
        sampled = mean_metrics([sampled_metrics(a, p.truth()) for p, a in zip(prompts, answers, strict=True)])
    return SplitScores(mean_metrics(exact), sampled)


def exact_rows(
    world: ToyWorld, prompts: Sequence[Prompt], probs: Sequence[dict[str, float]], k: int
) -> list[ExactMetrics]:
    """Exact metrics of every prompt from its answers' probabilities (K = ``k`` for the expected coverage)."""
    tail_rank = world.config.tail_start_rank
    return [
        exact_metrics(answer_probs, p.truth(), k=k, tail=p.answers[tail_rank:])
        for p, answer_probs in zip(prompts, probs, strict=True)
    ]


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
    model, tokenizer = load_model(path, tokenizer_path)
    return {
        split: asdict(score_split(model, tokenizer, world, prompts, fmt, num_samples, sample, seed))
        for split, prompts in (("seen", world.seen_prompts), ("heldout", world.heldout_prompts))
    }
