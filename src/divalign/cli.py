"""`divalign` command line: one subcommand per module, each exposing `add_parser(subparsers)` and `run(args)`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .quiet import quiet_loading_bars

# Adding a subcommand = adding its module here.
_COMMAND_MODULES = (
    "divalign.launch",
    "divalign.evaluation",
    "divalign.plotting",
    "divalign.pipeline",
    "divalign.compare",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="divalign", description="Diversity-preserving alignment tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `divalign` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_loading_bars()  # a bar per model loaded says nothing; the sampling and training bars say how far it is
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        # User errors (bad path, bad metric name, empty prompts): one clear line instead of a traceback.
        print(f"divalign {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
