"""The reward registry: recipe names to reward classes, and parsing of the recipe's ``rewards:`` value."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .darling import DarlingReward
from .format import FormatReward
from .length_penalty import LengthPenaltyReward
from .math_answer import MathAnswerReward
from .reward_model import RewardModelReward
from .toy_validity import ToyValidityReward
from .verifier import VerifierReward

# Arguments the stage fills in; a recipe cannot set them.
_CONTEXT_ARGS = ("num_generations", "build_reward")


@dataclass(frozen=True)
class RewardSpec:
    """One entry of a recipe's ``rewards:`` list: a registry name and its settings."""

    name: str
    kwargs: dict[str, Any]


REWARDS: dict[str, type] = {
    "math_answer": MathAnswerReward,
    "format": FormatReward,
    "length_penalty": LengthPenaltyReward,
    "reward_model": RewardModelReward,
    "darling": DarlingReward,
    "toy_validity": ToyValidityReward,
    "verifier": VerifierReward,
}


def parse_reward(entry: Any, where: str = "rewards") -> RewardSpec:
    """One reward entry: a registry name or a one-key mapping ``{name: settings}``, its settings checked against the
    reward's constructor now, before any model loads; errors start with ``where`` (the recipe key)."""
    if isinstance(entry, str):
        name, kwargs = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        ((name, kwargs),) = entry.items()
        kwargs = {} if kwargs is None else kwargs
    else:
        raise ValueError(
            f"{where}: each entry must be a reward name or a one-key mapping {{name: settings}}, got {entry!r}"
        )
    if name not in REWARDS:
        raise ValueError(f"{where}: unknown reward {name!r}; known rewards: {', '.join(REWARDS)}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: the settings of {name!r} must be a mapping, got {kwargs!r}")
    _check_kwargs(name, kwargs, where)
    return RewardSpec(name, dict(kwargs))


def _check_kwargs(name: str, kwargs: dict[str, Any], where: str) -> None:
    """Refuse unknown or missing settings now, before any model loads."""
    parameters = {key: p for key, p in inspect.signature(REWARDS[name].__init__).parameters.items() if key != "self"}
    known = [key for key in parameters if key not in _CONTEXT_ARGS]
    unknown = [key for key in kwargs if key not in known]
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown} for {name!r}; valid settings: {known}")
    missing = [k for k in known if parameters[k].default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ValueError(f"{where}: {name!r} needs the setting(s) {missing}")


def parse_rewards(value: Any) -> list[RewardSpec]:
    """The reward list of a recipe: a list of names / one-key mappings, a mapping, or the same as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [name.strip() for name in value.split(",") if name.strip()]  # --rewards math_answer,format
    if isinstance(value, dict):
        value = [{name: kwargs} for name, kwargs in value.items()]
    if not isinstance(value, list) or not value:
        raise ValueError(f"rewards must be a non-empty list of reward names or {{name: settings}}, got {value!r}")
    specs = [parse_reward(entry) for entry in value]
    for spec in specs:
        if spec.name == "darling":  # validate the nested quality reward too
            parse_reward(spec.kwargs.get("quality", "math_answer"))
    return specs


def build(entry: Any, num_generations: int = 8) -> Any:
    """One reward function from a name, a ``{name: settings}`` mapping or a :class:`RewardSpec`."""
    spec = entry if isinstance(entry, RewardSpec) else parse_reward(entry)
    kwargs = dict(spec.kwargs)
    if spec.name == "darling":
        kwargs.update(num_generations=num_generations, build_reward=lambda e: build(e, num_generations))
    return REWARDS[spec.name](**kwargs)


def build_all(specs: Sequence[RewardSpec], num_generations: int) -> list[Any]:
    return [build(spec, num_generations) for spec in specs]


def required_columns(rewards: Sequence[Any]) -> list[tuple[str, ...]]:
    """Dataset-column alternatives the rewards read together (one column per reward that reads one)."""
    options: list[tuple[str, ...]] = [()]
    for reward in rewards:
        alternatives = reward.required_columns() if hasattr(reward, "required_columns") else [()]
        options = [tuple(dict.fromkeys(o + a)) for o in options for a in alternatives]
    return options
