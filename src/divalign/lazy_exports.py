"""A package's heavy names, imported on first use: ``import divalign`` and `divalign --help` (every subcommand
registered) load neither torch, transformers nor TRL until a name that needs them is read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for ``package``: ``name`` read from the module ``homes[name]`` (relative to
    ``package``, or absolute), imported the first time the name is asked for."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(import_module(homes[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
