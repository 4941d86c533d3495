"""What the `divalign` subcommand modules (each with ``add_parser(subparsers)`` and ``run(args)``; :mod:`divalign.cli`)
share when they read their parsed flags: names given space or comma separated, and flags handed on to the function a
subcommand runs under their own names."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def split_names(values: Sequence[str] | None) -> list[str] | None:
    """A flag's names, space or comma separated: ``--metrics a b,c`` → ``["a", "b", "c"]``; ``None`` stays ``None``."""
    return None if values is None else [name for value in values for name in value.split(",") if name]


def flag_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The parsed flags ``names``, as the keyword arguments of the same names they are passed on as."""
    return {name: getattr(args, name) for name in names}
