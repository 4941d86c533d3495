"""The type check of a recipe block's values against its dataclass's annotations (numbers, strings, booleans,
lists, string-keyed mappings, unions and None), so a wrong value is refused naming its key, not deep in training.
YAML booleans are refused for whole numbers.
"""

from __future__ import annotations

import types
import typing
from typing import Any

_PLAIN_TYPES = {float: "a number", int: "a whole number", str: "a string", bool: "true or false"}


def check_field_type(prefix: str, name: str, value: Any, hint: Any) -> None:
    """Raise a `ValueError` naming the field (and, in a mapping such as `stop_below`, its key) when `value` does not
    match the annotation `hint`."""
    if _matches(value, hint):
        return
    if typing.get_origin(hint) is dict and isinstance(value, dict):
        key_hint, item_hint = typing.get_args(hint)
        for key, item in value.items():
            if not _matches(key, key_hint):
                raise ValueError(f"{prefix}{name}: key {key!r} must be {_PLAIN_TYPES.get(key_hint, key_hint)}")
            if not _matches(item, item_hint):
                expected = _PLAIN_TYPES.get(item_hint) or f"of type {item_hint}"
                raise ValueError(f"{prefix}{name}.{key} must be {expected}, got {item!r} ({type(item).__name__})")
    shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    raise ValueError(f"{prefix}{name} must be of type {shown}, got {value!r} ({type(value).__name__})")


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` matches `hint`: the annotations a recipe block's fields use (no generics beyond these)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # YAML booleans are ints in Python; refuse them for counts
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)
