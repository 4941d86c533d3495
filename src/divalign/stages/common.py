"""What the stage builders share: the model-loading keys of a recipe."""

from __future__ import annotations

from typing import Any


def model_init_kwargs(training_args: Any, model_args: Any) -> dict:
    """``from_pretrained`` keys from the recipe (revision, dtype, attention), under the config's own ``model_init_kwargs``."""
    kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    return {**kwargs, **(training_args.model_init_kwargs or {})}
