"""Launch one training stage from a recipe.

    accelerate launch --config_file accelerate_configs/zero3.yaml -m divalign.train recipes/tofu_sft.yaml [--key value]

The recipe's ``trainer:`` picks the stage (:data:`STAGES`); the other keys are TRL/transformers keys, overridden by
flags. Before the model loads, every key, the dataset columns and the output directory are checked; after the run the
model, its tokenizer and the resolved recipe (``divalign_recipe.yaml``) sit in ``output_dir``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trl import (
    DPOConfig,
    ModelConfig,
    ScriptArguments,
    SFTConfig,
    SFTTrainer,
)

from .datasets_io import check_columns, load_recipe_dataset
from .gem_config import GEMConfig
from .gem_trainer import GEMTrainer
from .grpo_config import DivGRPOConfig
from .output_dir import prepare_output_dir, write_resolved_recipe
from .recipe import RecipeError, parse_recipe, split_recipe
from .stages import dpo, grpo, sft
from .tofu_config import TOFUConfig
from .tofu_trainer import TOFUTrainer


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


def _diversity_callbacks(block: dict | None, recipe_path: str) -> list:
    if block is None:
        return []
    from .diversity.callback import DiversityCallback, DiversityConfig

    try:
        return [DiversityCallback(DiversityConfig.from_dict(block))]
    except ValueError as error:
        raise RecipeError(f"{recipe_path}: diversity: {error}") from error


def _check_trainable(trainer, before: int, stage: Stage, recipe_path: str) -> None:
    if not stage.checks_trainable_tokens or trainer.train_dataset is None:
        return
    if len(trainer.train_dataset) == 0:
        raise RecipeError(
            f"{recipe_path}: no trainable tokens: all {before} training examples are fully masked after tokenization "
            f"(max_length={trainer.args.max_length}, completion_only_loss={trainer.args.completion_only_loss}, "
            f"assistant_only_loss={trainer.args.assistant_only_loss}). Check that completions are non-empty and fit "
            "in max_length, or that the chat template marks assistant turns."
        )


def run_stage(recipe_path: str, overrides: Sequence[str] = ()) -> str:
    """Run the recipe at ``recipe_path`` with ``overrides``; returns the output directory."""
    trainer_name, diversity, env = split_recipe(recipe_path, list(STAGES))
    os.environ.update(env)
    stage = STAGES[trainer_name]
    script_args, training_args, model_args = parse_recipe(
        recipe_path, overrides, (ScriptArguments, stage.config_class, ModelConfig), trainer_name
    )
    if model_args.model_name_or_path is None:
        raise RecipeError(f"{recipe_path}: `model_name_or_path` is required")
    resume = prepare_output_dir(training_args)
    dataset = load_recipe_dataset(script_args)
    train_dataset = dataset[script_args.dataset_train_split]
    check_columns(train_dataset, stage.required_columns(training_args), script_args.dataset_name)
    eval_dataset = dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None
    callbacks = _diversity_callbacks(diversity, recipe_path)
    run = StageRun(trainer_name, script_args, training_args, model_args, train_dataset, eval_dataset, callbacks)
    trainer = stage.build(run)
    for callback in callbacks:
        callback.bind(trainer)
    _check_trainable(trainer, len(train_dataset), stage, recipe_path)
    if trainer.accelerator.is_main_process:
        write_resolved_recipe(training_args.output_dir, trainer_name, diversity, script_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the curves `divalign plot` draws
    if trainer.accelerator.is_main_process and trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(training_args.output_dir)
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers and the process group
        trainer.end()
    return training_args.output_dir


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--config"]:
        argv = argv[1:]
    if not argv or argv[0].startswith("-"):
        print("usage: python -m divalign.train RECIPE.yaml [--key value ...]", file=sys.stderr)
        return 2
    try:
        run_stage(argv[0], argv[1:])
    except RecipeError as error:
        print(f"divalign.train: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
