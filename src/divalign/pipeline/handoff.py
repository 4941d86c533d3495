"""What one pipeline stage hands the next: its result (:class:`StageResult`), what the next stage loads from it
(:class:`StageInput`: the model, or a LoRA adapter merged into its base — :func:`merge_adapter` — or continued), and
the tokenizer it must carry on unchanged (:func:`tokenizer_signature`, :func:`template_drift`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import PipelineError

ADAPTER_CONFIG = "adapter_config.json"
MERGED_DIR = "merged"
# Trainer keys that change the tokenizer on purpose: a drift they explain is a warning, not an error
TEMPLATE_KEYS = {"chat_template": "chat_template_path", "eos_token": "eos_token"}


@dataclass
class StageResult:
    """A finished (or, in a dry run, planned) stage: where its model is and what identifies that result."""

    name: str
    output_dir: Path
    digest: str
    run_id: str

    @property
    def is_adapter(self) -> bool:
        return (self.output_dir / ADAPTER_CONFIG).is_file()


@dataclass
class StageInput:
    """What a stage loads: a model path, flags that go with it, what identifies it in the hash, and the checkpoint
    whose tokenizer (chat template, EOS) the stage must carry on (the model path, unless an adapter is continued)."""

    model: str
    flags: list[str] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)
    tokenizer_source: str | None = None
    entry: list[str] = field(default_factory=lambda: ["-m", "divalign.train"])

    @property
    def tokenizer(self) -> str:
        return self.tokenizer_source or self.model


def merge_adapter(adapter_dir: Path) -> Path:
    """Merge the LoRA adapter in ``adapter_dir`` into its base model; save model + tokenizer in ``adapter_dir/merged``.

    Written to a temporary directory and renamed, so a ``merged`` directory is always complete and is reused.
    """
    target = adapter_dir / MERGED_DIR
    if (target / "config.json").is_file():
        return target
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    temporary = adapter_dir / f"{MERGED_DIR}.tmp-{os.getpid()}"
    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype="auto")
    model.merge_and_unload().save_pretrained(temporary)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(temporary)
    temporary.rename(target)
    return target


def tokenizer_signature(model: str) -> tuple[str | None, str | None]:
    """The chat template and EOS token a checkpoint's tokenizer carries."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"cannot read the tokenizer of {model} to check its chat template and EOS: {error}"
        ) from error
    return tokenizer.chat_template, tokenizer.eos_token


def short_text(text: str | None, limit: int = 200) -> str:
    if text is None:
        return "None"
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


def template_drift(before: tuple[str | None, str | None], after: tuple[str | None, str | None]) -> list[str]:
    """Names of the tokenizer fields (``chat_template``, ``eos_token``) that differ."""
    return [name for name, old, new in zip(TEMPLATE_KEYS, before, after, strict=True) if old != new]
