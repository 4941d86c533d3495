"""Every stage's values, with its overrides applied, checked as ``divalign.train`` will check them — before stage 1
trains, so a bad value in stage 3 fails in seconds instead of after two stages have trained.

For each stage the recipe and the flags the pipeline will launch it with go through ``divalign.train``'s own parsing
(TRL's parser into the stage's config, whose checks include ranges such as ``tofu_beta > 0``), its run options, its
``diversity:`` block (and a local probe-prompt file), its local dataset file, a test split when it evaluates, and the
mixed precision of its accelerate config against the recipe's ``bf16``/``fp16``. No model or dataset is loaded.

The pipeline process is not the stage's process: building ``TrainingArguments`` there would set up its devices and
process group (a CUDA context held by the pipeline for the whole run, a gloo group that cannot form). While a stage is
validated, ``TrainingArguments.device`` is the CPU and ``world_size`` the stage's process count (its accelerate config
or ``--num_processes``), so the configs' batch checks (e.g. GRPO's generation batch) see the launch's world size.
On a machine without a GPU (a login node, a CI box), TrainingArguments' device checks — ``bf16`` needs a GPU that
supports it — would fail every GPU recipe; there the values are validated as a CPU run (``use_cpu: true``), and the
device checks happen when the stage launches on its GPU node. :func:`validate_stages` says so in its notes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import precision
from ..datasets_io import FILE_BUILDERS
from ..recipe import RecipeError, parse_recipe, read_run_options, split_recipe
from .flags import override_flags
from .spec import PipelineError, PipelineSpec, StageSpec

CPU_NOTE = (
    "no GPU on this machine: stage values were validated as CPU runs (use_cpu: true); bf16/fp16 device checks run "
    "when each stage launches"
)


def has_gpu() -> bool:
    return torch.cuda.is_available()


def launch_flags(stage: StageSpec, model: str) -> list[str]:
    """The flags the pipeline launches ``stage`` with (its output dir, the model it loads, its overrides)."""
    return [
        "--output_dir",
        str(stage.output_dir),
        "--model_name_or_path",
        model,
        *override_flags(stage.overrides, stage.list_flags),
    ]


def _check_diversity(block: dict | None) -> None:
    if block is None:
        return
    from ..diversity.callback import DiversityConfig, load_probe_prompts

    try:
        config = DiversityConfig.from_dict(block)
        if Path(config.prompts).suffix in (".jsonl", ".json", ".txt"):  # a local file: cheap to read now
            load_probe_prompts(config)
    except (ValueError, FileNotFoundError) as error:
        raise RecipeError(f"diversity: {error}") from error


def _check_dataset(script_args: Any, training_args: Any) -> None:
    """A local dataset file must exist; a single local file has only a `train` split, so evaluation needs another."""
    path = Path(script_args.dataset_name or "")
    if path.suffix not in FILE_BUILDERS:
        return  # a Hub id or a dataset folder: read when the stage runs
    if not path.is_file():
        raise RecipeError(f"dataset file not found: {path} (dataset_name)")
    evaluates = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    if evaluates and script_args.dataset_test_split != "train":
        raise RecipeError(
            f"eval_strategy is set but the dataset file {path} has only a 'train' split, not "
            f"{script_args.dataset_test_split!r} (dataset_test_split)"
        )


def num_processes(accelerate_config: Path | None, launch_args: Sequence[str]) -> int:
    """The process count ``accelerate launch`` will start: ``--num_processes``, else the config's, else 1."""
    args = list(launch_args)
    if "--num_processes" in args and args.index("--num_processes") + 1 < len(args):
        return int(args[args.index("--num_processes") + 1])
    content = yaml.safe_load(accelerate_config.read_text()) if accelerate_config is not None else None
    return int(content.get("num_processes", 1)) if isinstance(content, dict) else 1


@contextlib.contextmanager
def parsed_as_launched(processes: int) -> Iterator[None]:
    """While parsing, ``TrainingArguments`` sees a CPU device and ``processes`` processes instead of setting up this
    process's devices and process group."""
    from transformers import TrainingArguments

    saved = {name: TrainingArguments.__dict__[name] for name in ("device", "world_size")}
    TrainingArguments.device = property(lambda self: torch.device("cpu"))
    TrainingArguments.world_size = property(lambda self: processes)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(TrainingArguments, name, value)


def validate_launch(
    recipe: Path, flags: list[str], accelerate_config: Path | None, launch_args: Sequence[str], on_gpu: bool
) -> None:
    """Raise a :class:`RecipeError` when ``accelerate launch [--config_file accelerate_config] [launch_args] -m
    divalign.train recipe flags`` would refuse its values (checked here without loading anything)."""
    from trl import ModelConfig, ScriptArguments

    from ..train import STAGES

    trainer, diversity, _ = split_recipe(recipe, list(STAGES))
    flags = [*flags, *([] if on_gpu else ["--use_cpu", "true"])]
    read_run_options(recipe, flags)
    classes = (ScriptArguments, STAGES[trainer].config_class, ModelConfig)
    with parsed_as_launched(num_processes(accelerate_config, launch_args)):
        script_args, training_args, _ = parse_recipe(recipe, flags, classes, trainer)
    _check_diversity(diversity)
    _check_dataset(script_args, training_args)
    precision.check_precision(training_args, precision.from_accelerate_config(accelerate_config, launch_args))


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
