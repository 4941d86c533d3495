"""Pretrain a tiny Llama on the toy world's plain-format corpus, so it knows the whole truth, long tail included.

The result is saved with ``save_pretrained`` (model + tokenizer) and loads by path like any Hub checkpoint, so
``python -m divalign.train`` fine-tunes it exactly as it would a real base model. A finished run is cached: calling
:func:`pretrain` again with the same settings on the same directory returns at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from divalign.smoke import llama_config
from divalign.toyworld.tokenizer import build_tokenizer
from divalign.toyworld.world import ToyWorld

INFO_FILE = "pretrain_info.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Size of the base model and of its pretraining run."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    steps: int = 800
    batch_size: int = 256
    learning_rate: float = 5e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0


def model_config(tokenizer: PreTrainedTokenizerFast, cfg: PretrainConfig) -> LlamaConfig:
    """A Llama small enough to pretrain in a few CPU minutes; tied embeddings halve its embedding parameters."""
    return llama_config(
        tokenizer,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        tie_word_embeddings=True,
    )


def encode_corpus(texts: list[str], tokenizer: PreTrainedTokenizerFast) -> tuple[torch.Tensor, torch.Tensor]:
    """``<bos> text <eos>`` per document, right-padded into one ``(N, L)`` id tensor and its labels (pad = -100)."""
    ids = [
        [tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        for t in texts
    ]
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
    labels = input_ids.masked_fill(input_ids == tokenizer.pad_token_id, -100)
    return input_ids, labels


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    # Linear warm-up then cosine decay to 10 %: the usual pretraining schedule, short enough for a CPU. After the
    # warm-up it is transformers' get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1) to the bit, but that
    # warms up from 0 (step / warmup) where this one starts at 1 / warmup: swapping would change the base model and
    # every number of the demo (tests/test_toyworld.py::test_the_pretraining_schedule_against_transformers_cosine).
    # For the same reason the loop is not transformers' Trainer (another batch order and RNG use).
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _train(model: LlamaForCausalLM, input_ids: torch.Tensor, labels: torch.Tensor, cfg: PretrainConfig) -> list[float]:
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, cfg))
    losses = []
    model.train()
    order = torch.randperm(len(input_ids), generator=generator)
    bar = tqdm(range(cfg.steps), desc="pretrain base model", unit="step")
    for step in bar:
        start = (step * cfg.batch_size) % len(order)
        if start + cfg.batch_size > len(order):  # new epoch: reshuffle
            order = torch.randperm(len(input_ids), generator=generator)
            start = 0
        batch = order[start : start + cfg.batch_size]
        loss = model(input_ids=input_ids[batch], labels=labels[batch]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def pretrain(world: ToyWorld, out_dir: str | Path, cfg: PretrainConfig | None = None) -> Path:
    """Pretrain the base model on ``world``'s plain corpus into ``out_dir`` unless an identical run is there."""
    cfg = cfg or PretrainConfig()
    out = Path(out_dir)
    texts = list(world.pretrain_texts(world.config.pretrain_examples, seed=world.config.seed + 2))
    # The corpus digest guards the cache against a changed world generator with an unchanged config
    corpus_digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    settings = {"world": asdict(world.config), "pretrain": asdict(cfg), "corpus_sha256": corpus_digest}
    info_path = out / INFO_FILE
    if info_path.exists() and json.loads(info_path.read_text())["settings"] == json.loads(json.dumps(settings)):
        return out
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(world)
    model = LlamaForCausalLM(model_config(tokenizer, cfg))
    input_ids, labels = encode_corpus(texts, tokenizer)
    began = time.time()
    losses = _train(model, input_ids, labels, cfg)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "settings": settings,
        "seconds": time.time() - began,
        "final_loss": sum(losses[-50:]) / 50,
        "num_parameters": model.num_parameters(),
        "losses": losses[::10],
    }
    # Written last, so an interrupted run is never mistaken for a finished one
    info_path.write_text(json.dumps(info, indent=1))
    return out
