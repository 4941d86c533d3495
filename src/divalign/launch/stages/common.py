"""What the stage builders share: the model-loading keys of a recipe and the trainer construction."""

from __future__ import annotations

from typing import Any

from trl import get_peft_config, get_quantization_config


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
