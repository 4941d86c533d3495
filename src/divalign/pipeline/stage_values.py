"""Every stage's values, with its overrides applied, checked as ``divalign.train`` will check them — before stage 1
trains, so a bad value in stage 3 fails in seconds instead of after two stages have trained.

Each stage goes through :func:`divalign.launch.checks.check_launch` with the flags the pipeline will launch it with
and its launch (the recipe's launcher keys, the stage's ``accelerate_config``/``launch_args``, its overrides'
launcher keys). The pipeline process is not the stage's process: it sets up no devices or process group (see
:mod:`divalign.launch.checks`). On a machine without a GPU the values are validated as CPU runs and
:func:`validate_stages` says so in its notes.
"""

from __future__ import annotations

from ..launch.checks import has_gpu, num_processes, parsed_as_launched, validate_launch
from ..launch.recipe import RecipeError
from .flags import override_flags
from .spec import PipelineError, PipelineSpec, StageSpec

__all__ = ["has_gpu", "num_processes", "parsed_as_launched", "validate_launch", "validate_stage", "validate_stages"]

CPU_NOTE = (
    "no GPU on this machine: stage values were validated as CPU runs (use_cpu: true); bf16/fp16 device checks run "
    "when each stage launches"
)


def launch_flags(stage: StageSpec, model: str) -> list[str]:
    """The flags the pipeline launches ``stage`` with (its output dir, the model it loads, its overrides)."""
    return [
        "--output_dir",
        str(stage.output_dir),
        "--model_name_or_path",
        model,
        *override_flags(stage.overrides, stage.list_flags),
    ]


def validate_stage(stage: StageSpec, model: str, on_gpu: bool) -> None:
    """Raise a :class:`PipelineError` naming the stage when ``divalign.train`` would refuse its values."""
    try:
        validate_launch(stage.recipe, launch_flags(stage, model), stage.accelerate_config, stage.launch_args, on_gpu)
    except RecipeError as error:
        raise PipelineError(f"stage {stage.name!r} ({stage.recipe} with its overrides): {error}") from error


def validate_stages(spec: PipelineSpec) -> list[str]:
    """Validate every stage of ``spec``; returns notes on what could not be checked here."""
    on_gpu = has_gpu()
    model = spec.base_model
    for stage in spec.stages:
        validate_stage(stage, model, on_gpu)
        model = str(stage.output_dir)  # the next stage loads this stage's output (or its merge)
    return [] if on_gpu else [CPU_NOTE]
