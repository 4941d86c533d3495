"""The stages a recipe can name with ``trainer:`` (:data:`STAGES`), each a config class and a trainer builder.

Each module gives its stages' ``build(run)`` (the trainer, ready to train) and ``columns(training_args)`` (the dataset
column alternatives checked before any model loads): :mod:`~divalign.launch.stages.sft` (``sft``, ``tofu``,
``gem``), :mod:`~divalign.launch.stages.dpo`, :mod:`~divalign.launch.stages.grpo`; :data:`STAGES` pairs them with
their config classes for :mod:`divalign.launch.train`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trl import DPOConfig, SFTConfig, SFTTrainer

from ...trainers.gem_config import GEMConfig
from ...trainers.gem_trainer import GEMTrainer
from ...trainers.grpo_config import DivGRPOConfig
from ...trainers.tofu_config import TOFUConfig
from ...trainers.tofu_trainer import TOFUTrainer
from . import dpo, grpo, sft


@dataclass(frozen=True)
class StageRun:
    """Everything a stage needs to build its trainer."""

    trainer_name: str
    script_args: Any
    training_args: Any
    model_args: Any
    train_dataset: Any
    eval_dataset: Any
    callbacks: list


@dataclass(frozen=True)
class Stage:
    """A trainer kind a recipe can name: its config class, the columns it reads, how its trainer is built."""

    config_class: type
    build: Callable[[StageRun], Any]
    required_columns: Callable[[Any], list[tuple[str, ...]]]
    checks_trainable_tokens: bool = True


STAGES: dict[str, Stage] = {
    "sft": Stage(SFTConfig, sft.builder(SFTTrainer), sft.columns),
    "tofu": Stage(TOFUConfig, sft.builder(TOFUTrainer), sft.columns),
    "gem": Stage(GEMConfig, sft.builder(GEMTrainer), sft.columns),
    "dpo": Stage(DPOConfig, dpo.build, dpo.columns, checks_trainable_tokens=False),
    "grpo": Stage(DivGRPOConfig, grpo.build, grpo.columns, checks_trainable_tokens=False),
}
