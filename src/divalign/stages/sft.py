"""SFT stages (`sft`, `tofu`, `gem`): TRL's SFTTrainer or a divalign subclass, from a model id or a previous stage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trl import get_peft_config, get_quantization_config

from .common import model_init_kwargs


def columns(training_args: Any) -> list[tuple[str, ...]]:
    """Conversations, prompt/completion pairs, or plain text in ``dataset_text_field``."""
    return [("messages",), ("prompt", "completion"), (training_args.dataset_text_field,)]


def builder(trainer_class: type) -> Callable[[Any], Any]:
    """A stage builder that constructs ``trainer_class`` (an ``SFTTrainer``) from a stage run."""

    def build(run: Any) -> Any:
        run.training_args.model_init_kwargs = model_init_kwargs(run.training_args, run.model_args)
        return trainer_class(
            model=run.model_args.model_name_or_path,
            args=run.training_args,
            train_dataset=run.train_dataset,
            eval_dataset=run.eval_dataset,
            peft_config=get_peft_config(run.model_args),
            quantization_config=get_quantization_config(run.model_args),
            callbacks=run.callbacks,
        )

    return build
