"""Recipes: the YAML files users launch. One flat mapping of TRL/transformers keys plus divalign's own.

A recipe names its stage with ``trainer:`` and may carry a ``diversity:`` block (the training-time diversity
callback) and an ``env:`` block (environment variables), as TRL's own ``--config`` files do. Everything else is parsed
by :class:`trl.TrlParser` into the stage's dataclasses, so command-line flags override the file and every key is
checked against the dataclass fields before anything loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DIVALIGN_KEYS = ("trainer", "diversity", "env")


class RecipeError(ValueError):
    """A recipe that cannot be run, with the file and key at fault in the message."""


def load_yaml_mapping(path: str | os.PathLike, kind: str = "recipe") -> dict[str, Any]:
    """Read a YAML ``kind`` file that must hold a mapping; clear errors for a missing file or another shape."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{kind} file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(content, dict):
        raise RecipeError(f"{path} must hold a YAML mapping of {kind} keys, got {type(content).__name__}")
    return content


def field_names(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}


def check_known_keys(keys: Sequence[str], known: set[str], where: str, what: str) -> None:
    """Raise a :class:`RecipeError` naming the first unknown key, with the closest valid names."""
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RecipeError(f"unknown {what} key {key!r} in {where}{hint}")


def _scalar_type(annotation: Any) -> type | None:
    """The plain scalar type a field holds (``float`` for ``float | None``), or ``None`` for anything richer."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    scalars = [a for a in options if a in (bool, int, float)]
    return scalars[0] if len(options) == 1 and scalars else None


def _fits(value: Any, expected: type) -> bool:
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return True
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_value_types(content: dict[str, Any], dataclass_types: Sequence[type], where: str) -> None:
    """Raise a :class:`RecipeError` naming a key whose value is not of its field's scalar type."""
    hints = {name: hint for cls in dataclass_types for name, hint in typing.get_type_hints(cls).items()}
    for key, value in content.items():
        expected = _scalar_type(hints.get(key))
        if expected is not None and not _fits(value, expected):
            raise RecipeError(
                f"recipe key {key!r} in {where} must be of type {expected.__name__}, got {value!r} ({type(value).__name__})"
            )


def _cli_keys(argv: Sequence[str]) -> list[str]:
    return [arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")]


def parse_recipe(
    path: str | os.PathLike, overrides: Sequence[str], dataclass_types: Sequence[type], trainer: str
) -> tuple[Any, ...]:
    """Parse ``path`` and ``overrides`` (``--key value`` flags) into ``dataclass_types`` with TRL's parser.

    The recipe's own divalign keys must already be removed by the caller (see :func:`split_recipe`).
    """
    from trl import TrlParser

    content = {k: v for k, v in load_yaml_mapping(path).items() if k not in DIVALIGN_KEYS}
    known = field_names(dataclass_types)
    check_known_keys(list(content), known, f"{path} (trainer: {trainer})", "recipe")
    check_known_keys(_cli_keys(overrides), known, "the command line", "flag")
    check_value_types(content, dataclass_types, str(path))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(content, handle)
    try:
        parser = TrlParser(list(dataclass_types))
        return tuple(parser.parse_args_and_config(["--config", handle.name, *overrides]))
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{path}: {error}") from error
    finally:
        os.unlink(handle.name)


def split_recipe(path: str | os.PathLike, known_trainers: Sequence[str]) -> tuple[str, dict | None, dict]:
    """Read divalign's own keys: the stage name, the ``diversity:`` block and the ``env:`` block."""
    content = load_yaml_mapping(path)
    trainer = content.get("trainer")
    if trainer is None:
        raise RecipeError(f"{path} has no `trainer:` key; expected one of {', '.join(known_trainers)}")
    if trainer not in known_trainers:
        raise RecipeError(f"{path}: unknown trainer {trainer!r}; expected one of {', '.join(known_trainers)}")
    diversity = content.get("diversity")
    if diversity is not None and not isinstance(diversity, dict):
        raise RecipeError(f"{path}: `diversity:` must be a mapping of callback settings, got {diversity!r}")
    env = content.get("env") or {}
    if not isinstance(env, dict):
        raise RecipeError(f"{path}: `env:` must be a mapping of environment variables, got {env!r}")
    return trainer, diversity, {str(k): str(v) for k, v in env.items()}
