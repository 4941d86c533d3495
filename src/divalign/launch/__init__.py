"""The launch path of a recipe: `divalign train` (this module), and the package that runs a training stage.

- :mod:`~divalign.launch.recipe`: the recipe file, parsed by TRL's parser into the stage's dataclasses, with
  divalign's own keys (``trainer``, ``diversity``, ``env``, run options, launcher keys);
  :mod:`~divalign.launch.value_ranges`: numbers no run can mean (``max_steps: 0``, ``max_length: -3``);
- :mod:`~divalign.launch.relaunch`: in this process, or relaunched through ``accelerate launch`` (presets in
  ``divalign/accelerate_configs/``); :mod:`~divalign.launch.checks`: a launch's values checked before it starts;
- :mod:`~divalign.launch.train`: one training stage from a recipe (``run_stage``), the code behind
  ``python -m divalign.train``; :mod:`~divalign.launch.stages`: the stages a recipe can name (``sft``, ``tofu``,
  ``gem``, ``dpo``, ``grpo``);
- the run's lifecycle: :mod:`~divalign.launch.output_dir` (fresh, resumed or finished; the resolved recipe),
  :mod:`~divalign.launch.checkpoints` (complete or cut short by a kill), :mod:`~divalign.launch.run_lock` (one run
  per directory; stop before saving without it),
  :mod:`~divalign.launch.resume_changes` (values changed on resume), :mod:`~divalign.launch.main_process` (file
  decisions made once for every rank), :mod:`~divalign.launch.nonfinite_guard` (stop at the first NaN/inf step);
- the checks before the model loads: :mod:`~divalign.launch.precision` (the launcher's mixed precision against the
  recipe's), :mod:`~divalign.launch.model_path` (a local path that is not there), :mod:`~divalign.launch.datasets_io`
  (the dataset's file, splits, columns, the kind of its text fields, conversational data for ``assistant_only_loss``),
  :mod:`~divalign.launch.tokenizer_checks`
  (``assistant_only_loss`` against the chat template, ``eos_token``).

This module registers the `divalign train` subcommand and imports only the light launcher code; the training code is
loaded when a recipe runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from .recipe import LAUNCH_KEYS
from .relaunch import preset_names


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `divalign train`."""
    keys = ", ".join(f"--{key}" for key in LAUNCH_KEYS)
    parser = subparsers.add_parser(
        "train",
        help="train from a recipe: in this process, or through accelerate launch when the recipe says how",
        description="Train from a recipe (TRL/transformers keys plus `trainer:`; recipes/README.md). Flags override "
        f"the recipe's keys, launcher keys included ({keys}; presets: {', '.join(preset_names())}), spelled with "
        "underscores or dashes (--max_steps or --max-steps), as TRL's parser takes them. With launcher "
        "keys the recipe is relaunched as `accelerate launch ... -m divalign.train RECIPE [flags]`; without them it "
        "runs in this process, like `python -m divalign.train RECIPE`.",
    )
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument(
        "--dry-run", "--dry_run", action="store_true", help="check the recipe and print the launch command"
    )
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="--key value pairs overriding the recipe")
    parser.set_defaults(func=run, print_help=parser.print_help)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign train` from parsed arguments."""
    from .train import main

    if {"-h", "--help"} & set(args.flags):
        args.print_help()
        return 0
    spellings = {"--dry-run", "--dry_run"}
    dry_run = ["--dry-run"] if args.dry_run or spellings & set(args.flags) else []
    return main([args.recipe, *[flag for flag in args.flags if flag not in spellings], *dry_run])
