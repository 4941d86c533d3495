"""A model reference (``model_name_or_path``, a pipeline's ``base_model``): a local checkpoint or a Hub id.

transformers takes any string that is not an existing directory for a Hub repo id, so a mistyped local path fails
late, after the dataset is tokenized, as an ``OSError`` about a repo id. A reference that can only be a path is
checked here, before anything loads.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import is_offline_mode, try_to_load_from_cache

from ..model_reference import looks_local
from .recipe import RecipeError

CHECKPOINT_FILES = ("config.json", "adapter_config.json")


def check_model_reference(model: object, key: str = "model_name_or_path") -> None:
    """Raise a :class:`RecipeError` naming ``key`` when ``model`` is a local path that is missing or not a checkpoint.

    A Hub id is left to transformers here (it may be downloadable); see :func:`check_model_available`.
    """
    if not isinstance(model, str) or not model:
        raise RecipeError(f"`{key}` must be a Hub id or a local checkpoint directory, got {model!r}")
    local = Path(model).expanduser()
    if local.exists():
        if not any((local / name).is_file() for name in CHECKPOINT_FILES):
            raise RecipeError(f"{key} {model} has no config.json; expected a saved checkpoint directory")
    elif looks_local(model):
        raise RecipeError(f"{key} {model} does not exist (a local path, not a Hub id)")


def check_model_available(model: str, key: str = "model_name_or_path") -> None:
    """:func:`check_model_reference`, and for a Hub id while the Hub is offline (``HF_HUB_OFFLINE=1``), that it is in
    the local cache: what the process about to load it needs (a pipeline planning on another machine does not)."""
    check_model_reference(model, key)
    if Path(model).expanduser().exists() or not is_offline_mode():
        return
    if not any(isinstance(try_to_load_from_cache(model, name), str) for name in CHECKPOINT_FILES):
        raise RecipeError(
            f"{key} {model} is neither a local directory nor a Hub model in the local cache, and the Hub is offline "
            "(HF_HUB_OFFLINE=1): download it first, or give a local checkpoint path"
        )
