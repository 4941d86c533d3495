"""A stage that keeps training the previous stage's LoRA adapter (``adapters: continue`` in a pipeline).

    accelerate launch ... -m divalign.pipeline.adapter_stage ADAPTER_DIR RECIPE.yaml --model_name_or_path BASE ...

Exactly ``divalign.train`` (same recipe, flags, checks and outputs), except that the policy is
``PeftModel.from_pretrained(BASE, ADAPTER_DIR, is_trainable=True)`` instead of the bare ``BASE``: TRL has no flag for
a pretrained adapter, and transformers attaches an adapter found in a directory frozen. Given a ``PeftModel``, TRL's
trainers train its adapter; DPO copies it into a frozen "ref" adapter, so the reference is the previous stage's policy.
The tokenizer is the adapter directory's (the previous stage's), not the base model's.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..launch import train
from ..launch.stages import model_init_kwargs


def load_trainable_adapter(base: str, adapter_dir: str, init_kwargs: dict[str, Any]) -> Any:
    """``base`` loaded as TRL would load it, with the adapter in ``adapter_dir`` attached and trainable."""
    from peft import PeftModel

    from ..compat import create_model_from_path

    model = PeftModel.from_pretrained(create_model_from_path(base, **init_kwargs), adapter_dir, is_trainable=True)
    # TRL loads the tokenizer from the config's path: make it the previous stage's, which the adapter dir holds
    model.config.name_or_path = adapter_dir
    return model


def continuing(build: Callable[[Any], Any], adapter_dir: str) -> Callable[[Any], Any]:
    """Wrap a stage builder so its trainer gets the adapter-carrying model object instead of the model path."""

    def build_with_adapter(run: Any) -> Any:
        from trl import get_quantization_config

        if get_quantization_config(run.model_args) is not None:
            raise train.RecipeError(
                "`adapters: continue` on a 4/8-bit base is not supported: TRL refuses a "
                "quantization config next to a loaded model; use `adapters: merge`"
            )
        path = run.model_args.model_name_or_path
        init_kwargs = {k: v for k, v in model_init_kwargs(run.training_args, run.model_args).items() if v is not None}
        if run.training_args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
            init_kwargs["device_map"] = None  # as TRL does: "auto" fails under distributed training
        run.model_args.model_name_or_path = load_trainable_adapter(path, adapter_dir, init_kwargs)
        try:
            return build(run)
        finally:  # the resolved recipe records the path, not the object
            run.model_args.model_name_or_path = path

    return build_with_adapter


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0].startswith("-"):
        print(
            "usage: python -m divalign.pipeline.adapter_stage ADAPTER_DIR RECIPE.yaml [--key value ...]",
            file=sys.stderr,
        )
        return 2
    adapter_dir, rest = argv[0], argv[1:]
    for name, stage in list(train.STAGES.items()):  # the table run_stage reads (a caller may have swapped it)
        train.STAGES[name] = dataclasses.replace(stage, build=continuing(stage.build, adapter_dir))
    return train.main(rest)


if __name__ == "__main__":
    sys.exit(main())
