"""`divalign pipeline FILE`: run a lineage of training stages (e.g. SFT → DPO → GRPO) from one file.

Each stage is ``accelerate launch ... -m divalign.train RECIPE`` loading the previous stage's output; finished stages
are skipped, interrupted ones resumed, changed ones refused unless ``--force-rerun``; the chat template and EOS token
are checked between stages; a stage a diversity threshold stopped ends the pipeline (``--accept-stopped`` goes on);
a lineage eval (``divalign eval``) can close the run. Format: recipes/pipelines/README.md.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..lazy_exports import lazy_getattr
from ..subcommand import flag_values

if TYPE_CHECKING:
    from .handoff import StageResult

# The runner loads the launch checks (datasets, transformers): imported on first use, so that `divalign --help`
# registers the subcommand without them
_LAZY = {
    **dict.fromkeys(("PipelineRunner", "launch_command", "stage_env"), ".runner"),
    **dict.fromkeys(("StageResult", "merge_adapter"), ".handoff"),
    **dict.fromkeys(("PipelineError", "PipelineSpec", "StageSpec", "load_pipeline"), ".spec"),
    **dict.fromkeys(("DONE_MARKER", "Status", "inspect_dir", "move_aside"), ".state"),
}

__all__ = [
    "DONE_MARKER",
    "PipelineError",
    "PipelineRunner",
    "PipelineSpec",
    "StageResult",
    "StageSpec",
    "Status",
    "add_parser",
    "inspect_dir",
    "launch_command",
    "load_pipeline",
    "merge_adapter",
    "move_aside",
    "run",
    "run_pipeline",
    "stage_env",
]


__getattr__ = lazy_getattr(__name__, _LAZY)


def run_pipeline(
    path: str,
    *,
    force_rerun: list[str] | tuple[str, ...] = (),
    only: str | None = None,
    dry_run: bool = False,
    **runner_kwargs: Any,
) -> list[StageResult]:
    """Validate the pipeline at ``path`` (every stage, before anything trains), then run it."""
    from .runner import PipelineRunner
    from .spec import load_pipeline

    spec = load_pipeline(path)
    runner = PipelineRunner(spec, force_rerun=force_rerun, only=only, dry_run=dry_run, **runner_kwargs)
    return runner.run()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `divalign pipeline`."""
    parser = subparsers.add_parser(
        "pipeline",
        help="run a multi-stage training lineage (SFT → DPO → GRPO ...) from one file",
        description="Run the stages of a pipeline file in order, each with `accelerate launch -m divalign.train`, "
        "skipping finished stages and resuming interrupted ones (format: recipes/pipelines/README.md).",
    )
    parser.add_argument("file", help="pipeline YAML file")
    parser.add_argument("--dry-run", action="store_true", help="validate and print each stage's plan and command")
    parser.add_argument(
        "--force-rerun",
        action="append",
        default=[],
        metavar="STAGE",
        help="move STAGE's finished output aside (<dir>.old-<timestamp>) and rerun it and every later "
        "stage; repeatable; 'eval' reruns the lineage eval only",
    )
    parser.add_argument(
        "--accept-stopped",
        action="append",
        default=[],
        metavar="STAGE",
        help="go on from STAGE's model although a diversity threshold (stop_below) stopped it; without it the "
        "pipeline stops after such a stage, in every rerun; repeatable",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="STAGE",
        help="run only STAGE (earlier stages must be finished); 'eval' runs only the lineage eval",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `divalign pipeline` from parsed arguments."""
    run_pipeline(args.file, **flag_values(args, "force_rerun", "only", "dry_run", "accept_stopped"))
    return 0
