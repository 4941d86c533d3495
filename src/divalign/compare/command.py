"""`divalign compare SPEC`: the subcommand's flags, and what each mode does (all cells then the report, one
``--cell``, ``--report``, ``--dry-run``, ``--list-cells``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..subcommand import flag_values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `divalign compare`."""
    parser = subparsers.add_parser(
        "compare",
        help="train every variant x seed of a spec and compare them with the reference at calibrated temperatures",
        description="Train every variant x seed cell of a compare spec (each cell through `divalign pipeline`'s "
        "launch path: finished cells are reused, interrupted ones resumed, changed ones refused until --force), then "
        "write OUTPUT_ROOT/report/results.{json,md}: each variant against the reference at the temperature where "
        "its diversity (or quality) matches the reference's. Format: recipes/compare/README.md.",
    )
    parser.add_argument("spec", help="compare spec YAML file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cell", metavar="NAME", help="run only cell NAME (VARIANT-seedN), e.g. as one job of an array")
    mode.add_argument("--report", action="store_true", help="only gather the finished cells and write the report")
    mode.add_argument("--list-cells", action="store_true", help="print the cell names, one a line")
    parser.add_argument(
        "--dry-run", action="store_true", help="check the spec and print every cell, its seed and its commands"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="move aside (<dir>.old-<timestamp>) and rerun the results whose inputs changed; finished cells with "
        "the same inputs are kept",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign compare` from parsed arguments."""
    from .workflow import run_compare

    run_compare(args.spec, **flag_values(args, "cell", "report", "list_cells", "dry_run", "force"))
    return 0
