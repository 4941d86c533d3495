"""A stage's ``overrides`` as the ``divalign.train`` flags the pipeline launches it with."""

from __future__ import annotations

import json
from typing import Any


def _flag_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def override_flags(overrides: dict[str, Any], list_flags: frozenset[str] = frozenset()) -> list[str]:
    """``{key: value}`` → ``--key value`` for ``divalign.train``, in TrlParser's syntax: a list for a list-typed flag
    is passed as several values, any other mapping or list as one JSON string."""
    flags = []
    for key, value in overrides.items():
        if key in list_flags and isinstance(value, list):
            flags += [f"--{key}", *(_flag_text(item) for item in value)]
        else:
            flags += [f"--{key}", _flag_text(value)]
    return flags
