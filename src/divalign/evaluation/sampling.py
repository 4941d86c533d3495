"""Sampling K completions per prompt from a local checkpoint, with HF `generate` or vLLM when available."""

from __future__ import annotations

import gc
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .prompts import PromptRecord, render_prompts

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class GenerationConfig:
    num_samples: int = 16
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off; HF would otherwise apply its default top_k=50 and vLLM none
    seed: int = 0
    batch_size: int = 8  # prompts per `generate` call; each expands to batch_size × num_samples rows
    backend: str = "auto"  # "auto" (vLLM when importable and a GPU is present), "hf" or "vllm"
    device: str | None = None


@dataclass
class Samples:
    """Completions of one model: per prompt, K texts and their token ids, plus the tokenizer's vocabulary size."""

    texts: list[list[str]]
    token_ids: list[list[list[int]]]
    vocab_size: int


def check_generation_config(cfg: GenerationConfig) -> None:
    """Reject settings that cannot give K independent samples, before any model is loaded."""
    if cfg.num_samples < 1 or cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise ValueError("--samples, --max-new-tokens and --batch-size must be >= 1")
    if cfg.temperature <= 0:
        raise ValueError(f"--temperature must be > 0 (got {cfg.temperature}): diversity of K samples needs sampling")
    if not 0 < cfg.top_p <= 1 or cfg.top_k < 0:
        raise ValueError(f"need 0 < --top-p <= 1 and --top-k >= 0, got top_p={cfg.top_p}, top_k={cfg.top_k}")
    if cfg.backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"backend must be auto, hf or vllm, got {cfg.backend!r}")


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


def _use_vllm(backend: str) -> bool:
    if backend == "hf":
        return False
    available = importlib.util.find_spec("vllm") is not None
    if backend == "vllm":
        if not available:
            raise ValueError("backend 'vllm' requested but vllm is not installed (pip install divalign[vllm])")
        return True
    import torch

    return available and torch.cuda.is_available()


def _eos_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """Tokenizer EOS plus the checkpoint's generation_config EOS ids (chat models often stop on several, e.g.
    <|im_end|> and <|endoftext|>); a stop token left in the ids would count as an n-gram."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    return {i for i in ids if i is not None}


def _trim(ids: list[int], stop: set[int], pad: int | None) -> list[int]:
    """Completion ids up to (excluding) the first EOS; padding after an early stop is dropped with it."""
    for pos, tok in enumerate(ids):
        if tok in stop:
            return ids[:pos]
    return [t for t in ids if t != pad] if pad is not None and pad not in stop else ids


def _load_hf(name: str, path: str, device: str | None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    except (OSError, ValueError) as err:
        raise ValueError(f"Model {name!r}: cannot load a causal LM and tokenizer from {path} ({err})") from err
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def _hf_sampling_kwargs(cfg: GenerationConfig) -> dict[str, Any]:
    """Every sampling knob set explicitly: a checkpoint's generation_config.json (e.g. top_k=20, repetition_penalty
    1.05) would otherwise apply to some models of the lineage and not others, and to HF but not vLLM."""
    return {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
            "repetition_penalty": 1.0, "min_p": None, "typical_p": 1.0}  # fmt: skip


def _sample_hf(name: str, path: str, records: list[PromptRecord], cfg: GenerationConfig) -> Samples:
    import torch
    from transformers import set_seed

    model, tokenizer = _load_hf(name, path, cfg.device)
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts, templated = render_prompts(tokenizer, records, name)
    stop, pad = _eos_ids(model.generation_config, tokenizer), tokenizer.pad_token_id
    set_seed(cfg.seed)  # same seed per model: differences between models are not RNG-stream differences
    texts: list[list[str]] = []
    token_ids: list[list[list[int]]] = []
    for start in range(0, len(prompts), cfg.batch_size):
        enc = tokenizer(
            prompts[start : start + cfg.batch_size], return_tensors="pt", padding=True, add_special_tokens=not templated
        ).to(model.device)
        sampling = (
            {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p}
            if cfg.temperature > 0
            else {"do_sample": False}
        )
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=cfg.max_new_tokens, num_return_sequences=cfg.num_samples, pad_token_id=pad,
                **sampling,
            )  # fmt: skip
        completions = [_trim(row, stop, pad) for row in out[:, enc["input_ids"].shape[1] :].tolist()]
        for i in range(0, len(completions), cfg.num_samples):
            group = completions[i : i + cfg.num_samples]
            token_ids.append(group)
            texts.append(tokenizer.batch_decode(group, skip_special_tokens=True))
    vocab_size = len(tokenizer)
    del model
    gc.collect()
    return Samples(texts=texts, token_ids=token_ids, vocab_size=vocab_size)


def _checkpoint_generation_config(path: str) -> Any:
    from transformers import GenerationConfig as HFGenerationConfig

    try:
        return HFGenerationConfig.from_pretrained(path)
    except OSError:  # checkpoints without generation_config.json
        return None


def _sample_vllm(name: str, path: str, records: list[PromptRecord], cfg: GenerationConfig) -> Samples:
    import torch
    from vllm import LLM, SamplingParams

    llm = LLM(model=path, seed=cfg.seed)
    tokenizer = llm.get_tokenizer()
    prompts, templated = render_prompts(tokenizer, records, name)
    # Pre-tokenised, so a chat template's BOS is not doubled by vLLM adding its own.
    inputs = [{"prompt_token_ids": tokenizer(p, add_special_tokens=not templated)["input_ids"]} for p in prompts]
    params = SamplingParams(
        n=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or -1,
        max_tokens=cfg.max_new_tokens, seed=cfg.seed,
    )  # fmt: skip
    outputs = llm.generate(inputs, params)
    stop = _eos_ids(_checkpoint_generation_config(path), tokenizer)
    token_ids = [[_trim(list(c.token_ids), stop, None) for c in o.outputs] for o in outputs]
    texts = [[tokenizer.decode(ids, skip_special_tokens=True) for ids in group] for group in token_ids]
    vocab_size = len(tokenizer)
    del llm
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return Samples(texts=texts, token_ids=token_ids, vocab_size=vocab_size)


def sample_model(name: str, path: str, records: list[PromptRecord], cfg: GenerationConfig) -> Samples:
    """K completions per prompt from the model at `path` (HF `generate`, or vLLM per `cfg.backend`)."""
    check_model_path(name, path)
    sampler = _sample_vllm if _use_vllm(cfg.backend) else _sample_hf
    return sampler(name, path, records, cfg)
