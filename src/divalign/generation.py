"""One sampling path for every diversity measurement: the training callback, `divalign eval` and the toy world.

A diversity number is only comparable with another if both were sampled the same way. This module (with the ones
it builds on) holds the whole way, so every caller renders, pads, stops, cuts and samples identically; the names of
`encoding` and `sampling_progress` are importable from here too:

- **rendering** and **stopping** (`divalign.encoding`): a prompt through the policy's chat template; a completion
  cut before its first stop or pad token;
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
- **one prefill per prompt** (`divalign.prompt_prefill`): the prompt's key/value cache is computed once and repeated
  for its K samples, a speed-up that leaves the logits as they were up to float rounding;
- **progress** (`divalign.sampling_progress`): with a `SamplingProgress`, a tqdm bar counts the tokens generated as
  `generate` produces them, with tokens/s, time left and the samples done.

vLLM (in `divalign.evaluation.sampling`) pins the same settings and seeds each prompt's request with `prompt_seed`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from . import compat
from .encoding import (
    Prompt,
    cut_at_stop,
    decode_group,
    encode_prompt,
    generated_tokens,
    pad_token_id,
    render_prompt,
    stop_token_ids,
    uses_chat_template,
)
from .prompt_prefill import prefilled_prompt_cache
from .sampling_progress import SamplingProgress, TokenCounter, token_bar

__all__ = [
    "NEUTRAL_PROCESSING",
    "Prompt",
    "SamplingProgress",
    "SamplingSettings",
    "SeededSampler",
    "TokenCounter",
    "bare_generation_defaults",
    "cut_at_stop",
    "decode_group",
    "encode_prompt",
    "generate_batch",
    "generated_tokens",
    "generation_config",
    "left_pad",
    "pad_token_id",
    "prompt_batches",
    "prompt_seed",
    "prompt_uniforms",
    "rank_batches",
    "render_prompt",
    "sample_completions",
    "sampling_processors",
    "stop_token_ids",
    "uses_chat_template",
]

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
    `generate` call; `prompt_indices` key each prompt's noise. Each prompt is prefilled once for its K rows
    (`divalign.prompt_prefill`). `on_tokens(n)` hears of the tokens generated as the decoding steps go
    (`TokenCounter`)."""
    k = settings.num_samples
    prompts, prompts_mask = left_pad([list(ids) for ids in prompt_ids], pad_id, model.device)
    cache = prefilled_prompt_cache(model, prompts, prompts_mask, k)
    input_ids, attention_mask = prompts.repeat_interleave(k, dim=0), prompts_mask.repeat_interleave(k, dim=0)
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
            **compat.generate_cache_kwargs(cache),
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
    with token_bar(progress, samples, settings.max_new_tokens, ends) as bar:
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
