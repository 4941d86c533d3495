"""The `dpo` stage: TRL's DPOTrainer on a preference dataset, starting from a previous stage's output directory.

DPO: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model", NeurIPS 2023
(arXiv 2305.18290). Without an explicit reference model, TRL reloads the policy's path as the frozen reference; with
a LoRA adapter (``use_peft``), the adapter-disabled policy is the reference.
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer

from ..recipe import RecipeError
from .common import build_trainer


def columns(training_args: Any) -> list[tuple[str, ...]]:
    """An explicit prompt, or an implicit one (the shared start of two conversations), with the two answers."""
    return [("prompt", "chosen", "rejected"), ("chosen", "rejected")]


def check_preference_format(dataset: Any, dataset_name: str) -> None:
    """Refuse a text prompt next to chat-message answers, which TRL would fail to concatenate mid-tokenization.

    HuggingFaceH4/ultrafeedback_binarized is such a dataset: `prompt` is a string while `chosen`/`rejected` are whole
    conversations that repeat it. Its `trl-lib/ultrafeedback_binarized` copy keeps only the conversations.
    """
    if "prompt" not in dataset.column_names or len(dataset) == 0:
        return
    first = dataset[0]
    if isinstance(first["prompt"], str) and not isinstance(first["chosen"], str):
        raise RecipeError(
            f"dataset {dataset_name!r}: `prompt` is text but `chosen`/`rejected` are chat messages; drop the `prompt` "
            "column when the conversations already contain it (DPO then takes their shared start as the prompt), "
            "or make `prompt` a list of messages"
        )


def build(run: Any) -> DPOTrainer:
    check_preference_format(run.train_dataset, run.script_args.dataset_name)
    return build_trainer(DPOTrainer, run)
