"""One sampling path for every diversity measurement: the training callback, `divalign eval` and the toy world.

A diversity number is only comparable with another if both were sampled the same way. This module holds the whole
way, so every caller renders, pads, stops, cuts and samples identically:

- **rendering**: a prompt goes through the policy's chat template with TRL's `apply_chat_template` (generation
  prompt added, or the final assistant turn continued); a tokenizer without a template gets the plain text with its
  special tokens, as SFT tokenization adds them;
- **stopping**: the tokenizer's EOS plus every EOS id of the checkpoint's generation config (chat models often stop
  on several); a completion is cut before the first of them or the pad token;
- **neutral sampling**: temperature and top-p as asked, nothing else. `generate` would otherwise merge the
  checkpoint's `generation_config.json` (a `top_k`, a `repetition_penalty`, ...) and transformers' defaults
  (`top_k=50`) into the call, so the distribution measured would change from checkpoint to checkpoint. Here
  `generate` sees a bare generation config for the duration of the call, the non-sampling processors are pinned off
  (repetition penalty 1, no n-gram blocking, no minimum length), and the only warpers are the ones listed in
  `sampling_processors`;
- **seeded noise per prompt**: a sample's randomness depends only on the seed, the prompt's index in its probe set,
  the sample's index and `max_new_tokens` — never on the rank, the process count, the number of samples per prompt,
  or which prompts share a `generate` batch. The draw of token t of sample k of prompt i is inverse-CDF sampling of
  the warped next-token distribution at the uniform number `u[k, t]` of a `(num_samples, max_new_tokens)` array
  filled row by row from a NumPy generator keyed by `(seed, i)` (`prompt_uniforms`): another `max_new_tokens` moves
  the rows of every sample but each prompt's first. `generate` then decodes greedily over scores that keep only the
  drawn token (`SeededSampler`). The same noise is reused at every evaluation, so a change in a curve is a change of
  the model, not of the dice;
- **progress**: with a `SamplingProgress`, a tqdm bar counts the tokens generated as `generate` produces them, at
  every decoding step (`TokenCounter`), with tokens/s, time left and the samples done.

vLLM (in `divalign.evaluation.sampling`) pins the same settings and seeds each prompt's request with `prompt_seed`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

Prompt = str | list[dict[str, Any]]

# Processors that `generate` would build from a checkpoint's generation config even in greedy decoding, pinned off.
NEUTRAL_PROCESSING: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,  # and min_new_tokens left unset: 0 there would add a (no-op) minimum-length processor
    "renormalize_logits": False,
    "remove_invalid_values": False,
}


@dataclass(frozen=True)
class SamplingSettings:
    """How K completions per prompt are sampled.

    Args:
        num_samples: completions per prompt (K).
        max_new_tokens: maximum new tokens per completion.
        temperature: sampling temperature (> 0).
        top_p: nucleus mass in (0, 1]; 1 = off.
        top_k: keep the k most likely tokens; 0 = off (the neutral value).
        seed: the seed of every prompt's noise (>= 0).
        batch_size: prompts per `generate` call (each expands to `num_samples` rows). It changes speed, not samples.
    """

    num_samples: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 8

    def check(self, prefix: str = "") -> None:
        """Raise a `ValueError` naming the setting (with `prefix`, e.g. "diversity.") that is out of range."""
        for name in ("num_samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{prefix}{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"{prefix}temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"{prefix}top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"{prefix}top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.seed < 0:
            raise ValueError(f"{prefix}seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class SamplingProgress:
    """A tqdm bar over one `sample_completions` call, moving at every decoding step: the tokens generated so far of
    this rank's share (each completion's tokens up to and including its stop token; the padding after it not), their
    rate, the time left, and in its postfix the samples done. The total starts at the budget (samples ×
    `max_new_tokens`) and drops by what a completion that stopped early left unused, so the time left is an upper
    bound and the finished bar's total is the tokens generated.

    Args:
        description: the bar's label (which model, which temperature, which step).
        leave: keep the finished bar on screen (a line per stage); False inside a training loop's own bar.
    """

    description: str
    leave: bool = True

    def bar(self, total: int, postfix: str = "") -> Any:
        return tqdm(
            total=total, desc=self.description, unit="token", leave=self.leave, dynamic_ncols=True, postfix=postfix
        )


# ---------------------------------------------------------------------------------------------------------------
# Prompts and stop tokens


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


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded `input_ids` and `attention_mask`: a decoder continues every row from the same right edge."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


# ---------------------------------------------------------------------------------------------------------------
# Seeded noise


def prompt_seed(seed: int, prompt_index: int) -> int:
    """A 63-bit seed for one prompt, mixed from `(seed, prompt_index)` by NumPy's `SeedSequence` (for backends, like
    vLLM, that take one integer seed per request)."""
    return int(np.random.SeedSequence([seed, prompt_index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def prompt_uniforms(seed: int, prompt_index: int, num_samples: int, steps: int) -> np.ndarray:
    """The `(num_samples, steps)` uniform numbers in (0, 1] that decide the samples of one prompt.

    Drawn from a PCG64 generator keyed by `(seed, prompt_index)` (NumPy's `SeedSequence` mixes the key), so they are
    the same on every process, device and batch layout. Filled row by row: more samples leave the first rows as they
    were; another `steps` keeps only the first row's common prefix. (0, 1], not [0, 1): inverse-CDF sampling at 0
    could pick a leading zero-probability token.
    """
    generator = np.random.default_rng([seed, prompt_index])
    return 1.0 - generator.random((num_samples, steps))


class SeededSampler(LogitsProcessor):
    """Draw each row's next token from the softmax of its (already warped) scores at that row's own uniform number,
    and return scores that keep only the drawn token, so greedy decoding emits it.

    Inverse-CDF sampling: token j is drawn when `cdf[j-1] < u · cdf[-1] <= cdf[j]`, i.e. with probability p_j, for
    u uniform in (0, 1]. The CDF is accumulated in float64 (float32 elsewhere on devices without it), so a 150k-token
    vocabulary loses no resolution.

    Args:
        uniforms: `(rows, max_new_tokens)`; row r of the batch draws its t-th new token at `uniforms[r, t]`.
        prompt_width: the (padded) prompt length, to tell which new token `generate` is at.
    """

    def __init__(self, uniforms: torch.Tensor, prompt_width: int) -> None:
        self.uniforms = uniforms
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        dtype = torch.float32 if scores.device.type == "mps" else torch.float64
        cdf = torch.softmax(scores.to(dtype), dim=-1).cumsum(dim=-1)
        target = self.uniforms[:, step : step + 1].to(device=cdf.device, dtype=dtype) * cdf[:, -1:]
        drawn = torch.searchsorted(cdf, target).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, -math.inf).scatter_(1, drawn, 0.0)


def sampling_processors(settings: SamplingSettings, uniforms: torch.Tensor, prompt_width: int) -> LogitsProcessorList:
    """The whole sampling rule: transformers' temperature, top-k and top-p warpers (in `generate`'s order, only those
    that are on), then the seeded draw."""
    processors = LogitsProcessorList()
    if settings.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k > 0:
        processors.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        processors.append(TopPLogitsWarper(settings.top_p))
    processors.append(SeededSampler(uniforms, prompt_width))
    return processors


def generation_config(settings: SamplingSettings, stop_ids: Sequence[int], pad_id: int) -> GenerationConfig:
    """What `generate` receives: greedy decoding over the seeded draw (`sampling_processors`), length and stop
    tokens, and every processor a checkpoint could switch on pinned off."""
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        use_cache=True,
        **NEUTRAL_PROCESSING,
    )


@contextlib.contextmanager
def bare_generation_defaults(model: Any) -> Iterator[None]:
    """Hide the checkpoint's generation config from `generate` for the duration: `generate` fills every field the
    call leaves unset from it (a `suppress_tokens`, a `bad_words_ids`, a `sequence_bias`, ... cannot be pinned to
    "off" from the call, since off is None). The model's own config is restored afterwards (it is saved with it)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = getattr(target, "generation_config", None)
    if saved is None:
        yield
        return
    target.generation_config = GenerationConfig(
        bos_token_id=saved.bos_token_id,
        eos_token_id=saved.eos_token_id,
        pad_token_id=saved.pad_token_id,
        decoder_start_token_id=saved.decoder_start_token_id,
    )
    try:
        yield
    finally:
        target.generation_config = saved


# ---------------------------------------------------------------------------------------------------------------
# Batches and sampling


def prompt_batches(num_prompts: int, batch_size: int) -> list[list[int]]:
    """Prompt indices in `generate` batches: consecutive, fixed by the prompt count and `batch_size` alone, so each
    batch (and its padding) is the same whatever the process count."""
    return [list(range(start, min(start + batch_size, num_prompts))) for start in range(0, num_prompts, batch_size)]


def rank_batches(num_prompts: int, batch_size: int, rank: int, world: int, lockstep: bool) -> list[list[int] | None]:
    """This rank's batches, dealt round-robin; with `lockstep` (sharded parameters, every rank must call `generate`
    equally often) short ranks get `None` entries: a dummy batch whose results are dropped."""
    # Not accelerate's split_between_processes(apply_padding=True): it deals contiguous chunks, pads with copies of
    # the last batch (a second full `generate` where a one-prompt dummy does) and reads the rank from the running
    # process, so no rank's share can be computed elsewhere (tests/test_generation.py fixes this dealing)
    batches = prompt_batches(num_prompts, batch_size)
    mine: list[list[int] | None] = list(batches[rank::world])
    if lockstep:
        mine += [None] * (math.ceil(len(batches) / world) - len(mine))
    return mine


@torch.no_grad()
def generate_batch(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    prompt_indices: Sequence[int],
    settings: SamplingSettings,
    stop_ids: Sequence[int],
    pad_id: int,
    synced_gpus: bool = False,
    on_tokens: Callable[[int], None] | None = None,
) -> list[list[list[int]]]:
    """K raw completions (token ids up to `max_new_tokens`, stop and pad tokens included) of each prompt, from one
    `generate` call; `prompt_indices` key each prompt's noise. `on_tokens(n)` hears of the tokens generated as the
    decoding steps go (`TokenCounter`)."""
    k = settings.num_samples
    rows = [list(ids) for ids in prompt_ids for _ in range(k)]
    input_ids, attention_mask = left_pad(rows, pad_id, model.device)
    noise = np.concatenate(
        [prompt_uniforms(settings.seed, i, k, settings.max_new_tokens) for i in prompt_indices], axis=0
    )
    width = input_ids.shape[1]
    counting = StoppingCriteriaList([TokenCounter(on_tokens, {*stop_ids, pad_id})] if on_tokens else [])
    with bare_generation_defaults(model):
        sequences = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=generation_config(settings, stop_ids, pad_id),
            logits_processor=sampling_processors(settings, torch.from_numpy(noise), width),
            stopping_criteria=counting,
            synced_gpus=synced_gpus,
        )
    completions = sequences[:, width:].tolist()
    return [completions[j * k : (j + 1) * k] for j in range(len(prompt_ids))]


def sample_completions(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    settings: SamplingSettings,
    stop_ids: Sequence[int],
    pad_id: int,
    *,
    rank: int = 0,
    world: int = 1,
    lockstep: bool = False,
    cut: bool = True,
    progress: SamplingProgress | None = None,
) -> dict[int, list[list[int]]]:
    """K completions of this rank's share of the prompts, cut before their first stop or pad token (raw, up to
    `max_new_tokens`, with `cut=False`): `{prompt index: ids}`.

    With `world > 1` the batches are dealt round-robin over ranks (`rank_batches`); `lockstep` generates with
    `synced_gpus` and dummy batches, for sharded parameters (ZeRO-3 without gathering, FSDP). With `progress`, a
    tqdm bar follows this rank's share (`SamplingProgress`).
    """
    batches = rank_batches(len(prompt_ids), settings.batch_size, rank, world, lockstep)
    ends = {*stop_ids, pad_id}
    out: dict[int, list[list[int]]] = {}
    samples = sum(len(batch) for batch in batches if batch) * settings.num_samples
    with _progress(progress, samples, settings.max_new_tokens, ends) as bar:
        for batch in batches:
            indices = batch if batch is not None else [0]
            completions = generate_batch(
                model,
                [prompt_ids[i] for i in indices],
                indices,
                settings,
                stop_ids,
                pad_id,
                synced_gpus=lockstep,
                on_tokens=bar.step if bar and batch is not None else None,  # a dummy batch's tokens are no one's
            )
            if batch is not None:
                out.update(
                    {
                        i: [cut_at_stop(row, ends if cut else ()) for row in rows]
                        for i, rows in zip(batch, completions, strict=True)
                    }
                )
                if bar:
                    bar.batch_done(completions)
    return out


class TokenCounter(StoppingCriteria):
    """A stopping criterion that never stops: after every decoding step it counts the rows that produced a token
    (those that had not yet produced a stop or pad token) and passes the count to `on_tokens` at most every
    `interval` seconds: reading the count waits for the device, so the steps between reads only add it up there."""

    interval = 0.2

    def __init__(self, on_tokens: Callable[[int], None], ends: set[int]) -> None:
        self.on_tokens = on_tokens
        self.ends = torch.tensor(sorted(ends))
        self.finished: torch.Tensor | None = None
        self.pending: torch.Tensor | None = None
        self.reported = time.monotonic()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        last = input_ids[:, -1]
        if self.finished is None:
            self.finished = torch.zeros_like(last, dtype=torch.bool)
            self.pending = torch.zeros((), dtype=torch.long, device=last.device)
            self.ends = self.ends.to(last.device)
        self.pending += (~self.finished).sum()
        self.finished |= torch.isin(last, self.ends)
        if time.monotonic() - self.reported >= self.interval:
            self.flush()
        return torch.zeros_like(last, dtype=torch.bool)

    def flush(self) -> None:
        if self.pending is not None and (count := int(self.pending)):
            self.on_tokens(count)
            self.pending.zero_()
        self.reported = time.monotonic()


class _TokenBar:
    """The bar of one `sample_completions` call: `step` adds tokens as they are generated, `batch_done` makes the
    count exact from the batch's raw completions and drops the budget its early-stopped completions left unused."""

    def __init__(self, progress: SamplingProgress, samples: int, max_new_tokens: int, ends: set[int]) -> None:
        self.samples, self.max_new_tokens, self.ends = samples, max_new_tokens, ends
        self.done_samples = self.done_tokens = 0
        self.bar = progress.bar(samples * max_new_tokens, postfix=self._samples_text())

    def _samples_text(self) -> str:
        return f"{self.done_samples}/{self.samples} samples"

    def step(self, tokens: int) -> None:
        self.bar.update(tokens)

    def batch_done(self, completions: list[list[list[int]]]) -> None:
        rows = [row for group in completions for row in group]
        self.done_tokens += sum(generated_tokens(row, self.ends) for row in rows)
        self.done_samples += len(rows)
        # the rows' unused budget leaves the total; the counted steps are replaced by the exact count
        self.bar.total = self.done_tokens + (self.samples - self.done_samples) * self.max_new_tokens
        self.bar.set_postfix_str(self._samples_text(), refresh=False)
        # the steps not yet reported (or, negative, the extra step of a deferred stop check)
        self.bar.update(self.done_tokens - self.bar.n)
        self.bar.refresh()


@contextlib.contextmanager
def _progress(
    progress: SamplingProgress | None, samples: int, max_new_tokens: int, ends: set[int]
) -> Iterator[_TokenBar | None]:
    """The token bar of `progress` for this call (None without one), closed at the end."""
    if progress is None:
        yield None
        return
    bar = _TokenBar(progress, samples, max_new_tokens, ends)
    try:
        yield bar
    finally:
        bar.bar.close()


def decode_group(tokenizer: Any, group: Sequence[Sequence[int]]) -> list[str]:
    """Texts of one prompt's completions (special tokens skipped)."""
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in group]
