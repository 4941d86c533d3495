"""The stages a recipe can name with ``trainer:`` (:data:`STAGES`): each a config class, the dataset columns it reads
and how its trainer is built.

- ``sft``, ``tofu``, ``gem``: TRL's SFTTrainer or a divalign subclass, from a model id or a previous stage;
- ``dpo``: TRL's DPOTrainer on a preference dataset. DPO: Rafailov et al., "Direct Preference Optimization: Your
  Language Model is Secretly a Reward Model", NeurIPS 2023 (arXiv 2305.18290). Without an explicit reference model,
  TRL reloads the policy's path as the frozen reference; with a LoRA adapter (``use_peft``), the adapter-disabled
  policy is the reference;
- ``grpo``: GRPO with rewards named in the recipe and `diversity/rollout/*` metrics. With TRL's default
  ``beta: 0.0`` the objective has no KL term and no reference model is loaded (the KL-free setting of DAPO, Yu et
  al., arXiv 2503.14476, and Dr. GRPO, Liu et al., arXiv 2503.20783); the stage checks that the built trainer holds
  none, since a reference copy of a 7B policy is a silent doubling of memory.

``columns(training_args)`` gives the column alternatives checked before any model loads; :mod:`divalign.launch.train`
builds the trainer with ``build(run)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

from ..rewards import build_all, required_columns
from ..trainers.gem_config import GEMConfig
from ..trainers.gem_trainer import GEMTrainer
from ..trainers.grpo_config import DivGRPOConfig
from ..trainers.grpo_trainer import DivGRPOTrainer
from ..trainers.tofu_config import TOFUConfig
from ..trainers.tofu_trainer import TOFUTrainer


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


def model_init_kwargs(training_args: Any, model_args: Any) -> dict:
    """``from_pretrained`` keys from the recipe (revision, dtype, attention), under the config's own ``model_init_kwargs``."""
    kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    return {**kwargs, **(training_args.model_init_kwargs or {})}


def build_trainer(trainer_class: type, run: Any, **extra: Any) -> Any:
    """``trainer_class`` on the run's model path, config, datasets, PEFT/quantization settings and callbacks."""
    run.training_args.model_init_kwargs = model_init_kwargs(run.training_args, run.model_args)
    return trainer_class(
        model=run.model_args.model_name_or_path,
        args=run.training_args,
        train_dataset=run.train_dataset,
        eval_dataset=run.eval_dataset,
        peft_config=get_peft_config(run.model_args),
        quantization_config=get_quantization_config(run.model_args),
        callbacks=run.callbacks,
        **extra,
    )


def sft_columns(training_args: Any) -> list[tuple[str, ...]]:
    """Conversations, prompt/completion pairs, or plain text in ``dataset_text_field``."""
    return [("messages",), ("prompt", "completion"), (training_args.dataset_text_field,)]


def dpo_columns(training_args: Any) -> list[tuple[str, ...]]:
    """An explicit prompt, or an implicit one (the shared start of two conversations), with the two answers."""
    return [("prompt", "chosen", "rejected"), ("chosen", "rejected")]


def grpo_columns(training_args: Any) -> list[tuple[str, ...]]:
    """`prompt`, plus the columns the rewards read (e.g. `answer` or `solution` for math_answer)."""
    rewards = build_all(training_args.reward_specs, training_args.num_generations)
    return [tuple(dict.fromkeys(("prompt", *option))) for option in required_columns(rewards)]


def check_reference_model(trainer: DivGRPOTrainer) -> None:
    """A KL-free run (``beta == 0``) must not hold a reference model."""
    if trainer.beta == 0.0 and trainer.ref_model is not None:
        raise RuntimeError("beta is 0.0 (KL-free GRPO) but the trainer loaded a reference model")


def build_grpo(run: Any) -> DivGRPOTrainer:
    args = run.training_args
    trainer = build_trainer(DivGRPOTrainer, run, reward_funcs=build_all(args.reward_specs, args.num_generations))
    check_reference_model(trainer)
    return trainer


def _builder(trainer_class: type) -> Callable[[StageRun], Any]:
    """A stage builder that constructs ``trainer_class`` from a stage run."""
    return functools.partial(build_trainer, trainer_class)


STAGES: dict[str, Stage] = {
    "sft": Stage(SFTConfig, _builder(SFTTrainer), sft_columns),
    "tofu": Stage(TOFUConfig, _builder(TOFUTrainer), sft_columns),
    "gem": Stage(GEMConfig, _builder(GEMTrainer), sft_columns),
    "dpo": Stage(DPOConfig, _builder(DPOTrainer), dpo_columns, checks_trainable_tokens=False),
    "grpo": Stage(DivGRPOConfig, build_grpo, grpo_columns, checks_trainable_tokens=False),
}
