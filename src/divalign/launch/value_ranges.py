"""Numbers a recipe may not hold: no steps, a negative length, a batch of nothing.

TRL and transformers take ``max_steps: 0`` (and train one step), ``max_length: -3`` (and drop 3 tokens of every row),
``per_device_train_batch_size: 0`` or ``num_train_epochs: 0`` without a word, and GRPO's ``num_generations: 0`` stops
on a division by zero inside the config. Each key here is checked, when a recipe or a flag sets it, before the configs
are built (by :func:`divalign.launch.recipe.parse_recipe`, which raises the message as a ``RecipeError``); the message
names the key, where it was set and what is allowed. A key the stage's config does not have is never reached: the
parser refuses unknown keys first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bound:
    """What a key allows: ``holds(value)``, described to the user as ``expected``."""

    expected: str
    holds: Callable[[float], bool]


COUNT = Bound("a whole number >= 1", lambda value: value >= 1)
TOKENS = Bound("a token count >= 1 (or null: no limit)", lambda value: value >= 1)
NON_NEGATIVE = Bound(">= 0", lambda value: value >= 0)
POSITIVE = Bound("> 0", lambda value: value > 0)
FRACTION = Bound("in [0, 1)", lambda value: 0 <= value < 1)
SEED = Bound("a whole number in 0 .. 2**32 - 1 (numpy's seed range)", lambda value: 0 <= value < 2**32)

BOUNDS: dict[str, Bound] = {
    "max_steps": Bound("-1 (train for num_train_epochs) or a step count >= 1", lambda value: value == -1 or value >= 1),
    "per_device_train_batch_size": COUNT,
    "per_device_eval_batch_size": COUNT,
    "gradient_accumulation_steps": COUNT,
    "eval_accumulation_steps": COUNT,
    "max_length": TOKENS,
    "max_completion_length": TOKENS,
    "learning_rate": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,
    "adam_epsilon": NON_NEGATIVE,
    "adam_beta1": FRACTION,
    "adam_beta2": FRACTION,
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "seed": SEED,
    "data_seed": SEED,
    "dataloader_num_workers": NON_NEGATIVE,
    # GRPO
    "num_generations": Bound("a whole number >= 2 (advantages compare a prompt's completions)", lambda v: v >= 2),
    "steps_per_generation": COUNT,
    "generation_batch_size": COUNT,
    "num_iterations": COUNT,
    "temperature": POSITIVE,
    "top_p": Bound("in (0, 1]", lambda value: 0 < value <= 1),
    "beta": NON_NEGATIVE,  # DPO's and GRPO's KL coefficient (GRPO's 0 is KL-free)
}
EPOCHS = Bound("> 0 when max_steps is -1 (the epochs then set the length of the run)", lambda value: value > 0)
RANGE_KEYS = frozenset({*BOUNDS, "num_train_epochs"})


def _outside(key: str, value: Any, bound: Bound, where: str) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and not bound.holds(value):
        return f"`{key}` must be {bound.expected}, got {value!r} ({where})"
    return None


def out_of_range(values: Mapping[str, tuple[Any, str]], defaults: Mapping[str, Any]) -> str | None:
    """The error for the first key of ``values`` (``key: (number, where it was set)``) outside its bound, or ``None``;
    ``num_train_epochs`` only counts when ``max_steps`` (as set, else its default) is -1."""
    for key, (value, where) in values.items():
        message = _outside(key, value, BOUNDS[key], where) if key in BOUNDS else None
        if message:
            return message
    max_steps = values["max_steps"][0] if "max_steps" in values else defaults.get("max_steps")
    if "num_train_epochs" in values and max_steps == -1:
        epochs, where = values["num_train_epochs"]
        return _outside("num_train_epochs", epochs, EPOCHS, where)
    return None
