"""The launcher's mixed precision against the recipe's ``bf16``/``fp16``, checked before the model loads.

``accelerate launch`` passes its config's ``mixed_precision`` to the run (``ACCELERATE_MIXED_PRECISION``). Under
DeepSpeed a precision that disagrees with the recipe fails only after the model has loaded ("DeepSpeed config values
that mismatch TrainingArguments"); under DDP, transformers silently trains in the launcher's precision when the
recipe asks for none, and the resolved recipe would record ``bf16: false`` for a bf16 run. Both are refused here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .recipe import RecipeError

_HALF = ("fp16", "bf16", "fp8")


@dataclass(frozen=True)
class LaunchPrecision:
    """What the launcher asks for: its ``mixed_precision``, whether it runs DeepSpeed, and a DeepSpeed config file's
    own ``bf16``/``fp16`` settings (``None`` where absent, ``"auto"`` where it defers to the recipe)."""

    mixed_precision: str
    deepspeed: bool
    source: str
    deepspeed_file: Mapping[str, Any] | None = None


def _deepspeed_file(path: str | None) -> Mapping[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        return None


def from_environment(env: Mapping[str, str] = os.environ) -> LaunchPrecision | None:
    """The precision ``accelerate launch`` handed to this process, or ``None`` outside ``accelerate launch``."""
    mixed = env.get("ACCELERATE_MIXED_PRECISION")
    if mixed is None:
        return None
    return LaunchPrecision(
        mixed_precision=mixed.lower(),
        deepspeed=env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true",
        source=f"the accelerate launch (ACCELERATE_MIXED_PRECISION={mixed})",
        deepspeed_file=_deepspeed_file(env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")),
    )


def _flag(launch_args: Sequence[str], name: str) -> str | None:
    args = list(launch_args)
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def from_accelerate_config(config: Path | None, launch_args: Sequence[str] = ()) -> LaunchPrecision | None:
    """What ``accelerate launch [--config_file config] [launch_args]`` will ask for, or ``None`` when neither says
    (accelerate then falls back to the machine's default config, which a pipeline cannot see in advance)."""
    content = yaml.safe_load(config.read_text()) if config is not None else {}
    content = content if isinstance(content, dict) else {}
    mixed = _flag(launch_args, "--mixed_precision") or content.get("mixed_precision")
    if mixed is None:
        return None
    deepspeed = content.get("distributed_type") == "DEEPSPEED" or "--use_deepspeed" in launch_args
    ds_file = (content.get("deepspeed_config") or {}).get("deepspeed_config_file")
    where = (
        "`--mixed_precision` in launch_args"
        if _flag(launch_args, "--mixed_precision")
        else f"accelerate config {config}"
    )
    return LaunchPrecision(str(mixed).lower(), deepspeed, where, _deepspeed_file(ds_file))


def recipe_precision(training_args: Any) -> str:
    return "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no"


def _deepspeed_precision(launch: LaunchPrecision) -> str | None:
    """The precision DeepSpeed will run in, or ``None`` when its config defers to the recipe ("auto")."""
    config = launch.deepspeed_file or {}
    explicit = {name: (config.get(name) or {}).get("enabled") for name in ("bf16", "fp16")}
    if "auto" in explicit.values():
        return None
    for name in ("bf16", "fp16"):
        if explicit[name] is True or str(explicit[name]).lower() == "true":
            return name
    if any(value is not None for value in explicit.values()):
        return "no"
    return {"fp8": "bf16"}.get(launch.mixed_precision, launch.mixed_precision)


def check_precision(training_args: Any, launch: LaunchPrecision | None) -> None:
    """Raise a :class:`RecipeError` when the launcher and the recipe disagree on the training precision."""
    if launch is None:
        return
    recipe = recipe_precision(training_args)
    if launch.deepspeed:
        launched = _deepspeed_precision(launch)
        if launched is None or launched == recipe:
            return
    elif recipe != "no" or launch.mixed_precision not in _HALF:
        return  # transformers trains in the recipe's precision whenever the recipe names one
    else:
        launched = launch.mixed_precision
    raise RecipeError(
        f"the recipe trains in {'full precision' if recipe == 'no' else recipe} (bf16: {training_args.bf16}, fp16: "
        f"{training_args.fp16}) but {launch.source} asks for mixed_precision {launched!r}. Make them agree: set it in "
        f"the recipe (--bf16 true / --fp16 true), or launch with `accelerate launch --mixed_precision {recipe}` (an "
        f"accelerate config with mixed_precision: '{recipe}')"
    )
