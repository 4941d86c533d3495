"""Learned reward: a sequence-classification reward model scores prompt + completion (Ouyang et al., arXiv 2203.02155).

TRL can take a reward model id in ``reward_funcs`` directly; this wrapper exists so a reward model can also be the
quality term of :class:`~divalign.rewards.darling.DarlingReward`, and so it loads lazily (on the first batch, once per
process) instead of while the recipe is validated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..model_reference import looks_local
from ..zero3 import whole_model_loading
from .base import completion_text


def check_reward_model_reference(model: str, where: str) -> None:
    """Raise a ``ValueError`` starting with ``where`` when ``model`` is a local path that is missing or holds no
    checkpoint, before any model loads (a Hub id is left to the load)."""
    local = Path(model).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ValueError(
                f"{where}: {model} has no config.json; expected a saved sequence-classification checkpoint directory"
            )
    elif looks_local(model):
        raise ValueError(f"{where}: reward model {model} does not exist (a local path, not a Hub id)")


def _check_head(model: Any, missing: list[str], path: str) -> None:
    """Refuse a checkpoint whose weights lack what the classification model needs (its score head): transformers
    would initialise it at random, and every score would be noise that changes from one load to the next."""
    if not missing:
        return
    kind = ", ".join(getattr(model.config, "architectures", None) or []) or model.config.model_type
    raise ValueError(
        f"reward model {path}: its weights have no {', '.join(sorted(missing)[:4])} (the sequence-classification "
        f"head {type(model).__name__} scores with; it would be randomly initialised). The checkpoint is a {kind}; "
        "expected a trained reward model, saved from an AutoModelForSequenceClassification (one logit)"
    )


class RewardModelReward:
    """Score of a sequence-classification reward model (its first logit) for each prompt + completion.

    Conversational prompts and completions are rendered with the reward model's own chat template, plain ones are
    concatenated. The model and its tokenizer load once, on the first call, whole on every process's accelerator
    device (also under ZeRO-3): fine for the usual small reward models; for one as large as the policy, pass its id
    to TRL's `GRPOTrainer(reward_funcs=...)` instead, which shards it with the policy.

    Args:
        model: Hub id or local path of an `AutoModelForSequenceClassification` checkpoint with its tokenizer.
        max_length: truncate the scored text to this many reward-model tokens (keeping the start).
        batch_size: texts per reward-model forward.
        dtype: `"float32"`, `"bfloat16"`, ... for the weights; `"auto"` keeps the checkpoint's dtype.
    """

    __name__ = "reward_model"

    def __init__(self, model: str, max_length: int | None = None, batch_size: int = 8, dtype: str = "auto") -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"reward_model.model must be a model id or path, got {model!r}")
        if batch_size < 1:
            raise ValueError(f"reward_model.batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.dtype = dtype
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> None:
        """Load the model and its tokenizer now (otherwise the first call loads them); a bad path fails here."""
        if self._model is None:
            self._load()

    def _load(self) -> None:
        from accelerate import PartialState
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        with whole_model_loading():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                self.model_name, dtype=self.dtype, output_loading_info=True
            )
        _check_head(model, list(info.get("missing_keys", ())), self.model_name)
        if model.config.pad_token_id is None:  # classification heads pick the last non-pad token to score
            model.config.pad_token_id = self._tokenizer.pad_token_id
        self._model = model.to(PartialState().device).eval()

    def _templated(self, prompt: Any) -> bool:
        return not isinstance(prompt, str) and bool(getattr(self._tokenizer, "chat_template", None))

    def render(self, prompt: Any, completion: Any) -> str:
        if self._templated(prompt):
            return self._tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=False)
        plain_prompt = prompt if isinstance(prompt, str) else completion_text(prompt)
        return plain_prompt + completion_text(completion)

    @torch.no_grad()
    def scores(self, texts: list[str], add_special_tokens: bool = True) -> list[float]:
        if self._model is None:
            self._load()
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
                add_special_tokens=add_special_tokens,  # False when a chat template already wrote them
            ).to(self._model.device)
            out.extend(self._model(**batch).logits[:, 0].float().tolist())
        return out

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        if self._model is None:
            self._load()
        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        return self.scores(texts, add_special_tokens=not (prompts and self._templated(prompts[0])))
