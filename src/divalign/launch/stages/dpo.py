"""The `dpo` stage: TRL's DPOTrainer on a preference dataset, starting from a previous stage's output directory.

DPO: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model", NeurIPS 2023
(arXiv 2305.18290). Without an explicit reference model, TRL reloads the policy's path as the frozen reference; with
a LoRA adapter (``use_peft``), the adapter-disabled policy is the reference.
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer

from .common import build_trainer


def columns(training_args: Any) -> list[tuple[str, ...]]:
    """An explicit prompt, or an implicit one (the shared start of two conversations), with the two answers."""
    return [("prompt", "chosen", "rejected"), ("chosen", "rejected")]


def build(run: Any) -> DPOTrainer:
    return build_trainer(DPOTrainer, run)
