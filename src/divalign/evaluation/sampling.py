"""K completions per prompt from a saved checkpoint for `divalign eval`: HF `generate` through
`divalign.generation` (the sampling path the training callback uses), or vLLM with the same pinned settings."""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..generation import (
    SamplingProgress,
    SamplingSettings,
    cut_at_stop,
    decode_group,
    encode_prompt,
    pad_token_id,
    prompt_seed,
    sample_completions,
    stop_token_ids,
    uses_chat_template,
)
from ..prompts import PromptRecord
from .backends import BACKENDS, use_vllm

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class EvalSampling:
    """How `divalign eval` samples: the shared `SamplingSettings`, the backend and the device."""

    settings: SamplingSettings
    backend: str = "auto"  # "auto" (= "hf": vLLM is opt-in, `backends.VLLM_OPT_IN`), "hf" or "vllm"
    device: str | None = None


@dataclass
class Samples:
    """Completions of one model: per prompt, K texts and their token ids, the tokenizer's vocabulary size, and
    whether the prompts went through the policy's chat template (how a quality reads them)."""

    texts: list[list[str]]
    token_ids: list[list[list[int]]]
    vocab_size: int
    chat: bool = True


def check_sampling(sampling: EvalSampling, temperatures: list[float] | None = None) -> None:
    """Reject settings that cannot give K independent samples, before any model is loaded (errors name the flag)."""
    settings = sampling.settings
    if settings.num_samples < 2:
        raise ValueError(
            f"--samples must be >= 2 (diversity needs several samples per prompt), got {settings.num_samples}"
        )
    if settings.max_new_tokens < 1 or settings.batch_size < 1:
        raise ValueError(
            f"--max-new-tokens and --batch-size must be >= 1, got {settings.max_new_tokens} and {settings.batch_size}"
        )
    for flag, value in [("--temperature", settings.temperature), *(("--temperatures", t) for t in temperatures or [])]:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be > 0 (got {value}): diversity of K samples needs sampling")
    if not 0 < settings.top_p <= 1 or settings.top_k < 0:
        raise ValueError(f"need 0 < --top-p <= 1 and --top-k >= 0, got top_p={settings.top_p}, top_k={settings.top_k}")
    if settings.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {settings.seed}")
    if sampling.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {sampling.backend!r}")


def check_model_path(name: str, path: str) -> None:
    """Fail before any sampling when a model path cannot possibly load (so a lineage run dies in seconds, not
    after the first models). Hub ids are left to `from_pretrained`."""
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"Model {name!r}: {path} has no config.json; expected a saved checkpoint directory")
        return
    if not _HUB_ID.match(path):
        raise FileNotFoundError(f"Model {name!r}: no checkpoint directory at {path}")


class HFSampler:
    """One checkpoint loaded with transformers, sampled at any settings through `divalign.generation`."""

    def __init__(self, name: str, path: str, device: str | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        except (OSError, ValueError) as err:
            raise ValueError(f"Model {name!r}: cannot load a causal LM and tokenizer from {path} ({err})") from err
        self.model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        self.name = name
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        self.pad_id = pad_token_id(self.tokenizer, self.stop_ids)

    def sample(self, records: list[PromptRecord], settings: SamplingSettings) -> Samples:
        prompt_ids = [_encode(record.prompt, self.tokenizer, self.name) for record in records]
        progress = SamplingProgress(f"sampling {self.name} (T={settings.temperature:g})")
        groups = sample_completions(self.model, prompt_ids, settings, self.stop_ids, self.pad_id, progress=progress)
        token_ids = [groups[i] for i in range(len(records))]
        texts = [decode_group(self.tokenizer, group) for group in token_ids]
        return Samples(texts, token_ids, len(self.tokenizer), chat=uses_chat_template(self.tokenizer))

    def close(self) -> None:
        del self.model
        gc.collect()


class VLLMSampler:
    """One checkpoint loaded with vLLM. The settings are pinned as on the HF path (temperature, top-p, top-k as
    asked; min-p 0, no repetition/presence/frequency penalty, no minimum length) and the checkpoint's
    generation_config is not applied (`generation_config="vllm"`); each prompt's request gets its own seed
    (`prompt_seed`), so its samples do not depend on the batch. The noise differs from the HF backend's."""

    def __init__(self, name: str, path: str, seed: int) -> None:
        from vllm import LLM

        self.llm = LLM(model=path, seed=seed, generation_config="vllm")
        self.tokenizer = self.llm.get_tokenizer()
        self.name = name
        self.stop_ids = stop_token_ids(self.tokenizer, _checkpoint_generation_config(path))

    def sample(self, records: list[PromptRecord], settings: SamplingSettings) -> Samples:
        from vllm import SamplingParams

        # Pre-tokenised, so a chat template's BOS is not doubled by vLLM adding its own.
        inputs = [{"prompt_token_ids": _encode(r.prompt, self.tokenizer, self.name)} for r in records]
        pinned = {"min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
        params = [
            SamplingParams(
                n=settings.num_samples,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k or -1,
                min_tokens=0,
                max_tokens=settings.max_new_tokens,
                stop_token_ids=self.stop_ids,
                seed=prompt_seed(settings.seed, index),
                **pinned,
            )
            for index in range(len(records))
        ]
        outputs = self.llm.generate(inputs, params)
        token_ids = [[cut_at_stop(list(c.token_ids), self.stop_ids) for c in o.outputs] for o in outputs]
        texts = [decode_group(self.tokenizer, group) for group in token_ids]
        return Samples(texts, token_ids, len(self.tokenizer), chat=uses_chat_template(self.tokenizer))

    def close(self) -> None:
        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _encode(prompt: Any, tokenizer: Any, name: str) -> list[int]:
    try:
        return encode_prompt(prompt, tokenizer)
    except ValueError as err:
        raise ValueError(f"Model {name!r}: {err}") from err


def _checkpoint_generation_config(path: str) -> Any:
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # checkpoints without generation_config.json
        return None


def open_sampler(name: str, path: str, sampling: EvalSampling) -> HFSampler | VLLMSampler:
    """Load the model at `path` with the backend `sampling.backend` resolves to."""
    check_model_path(name, path)
    if use_vllm(sampling.backend):
        return VLLMSampler(name, path, sampling.settings.seed)
    return HFSampler(name, path, sampling.device)
