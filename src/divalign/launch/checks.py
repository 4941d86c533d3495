"""A launch checked before it starts: the recipe's values as ``divalign.train`` will parse them, in the launch's world.

The recipe and its flags go through ``divalign.train``'s own parsing (TRL's parser into the stage's config, whose
checks include ranges such as ``tofu_beta > 0``, and :mod:`divalign.launch.value_ranges`), its run options, its
``output_dir`` (not a file), the tokenizer it will train with when it is on this machine (``assistant_only_loss``
against its chat template, ``eos_token``: :mod:`divalign.launch.tokenizer_checks`; never downloaded here), its
``diversity:`` block (and a local probe-prompt file), its local dataset file, a test split when it evaluates, and the
mixed precision of the launch against the recipe's ``bf16``/``fp16``. No model or dataset is loaded, and this process sets up no devices: while the values are
parsed, ``TrainingArguments.device`` is the CPU and ``world_size`` the launch's process count (its launcher settings,
else its accelerate config's, else 1), so the configs' batch checks (e.g. GRPO's generation batch) see the launch's
world size. On a machine without a GPU (a login node, a CI box), TrainingArguments' device checks (``bf16`` needs a GPU
that supports it) would fail every GPU recipe; there the values are validated as a CPU run (``use_cpu: true``), the
device checks happen when the run starts on its GPU node, and a recipe in bf16/fp16 gets a note on stderr saying that
it needs a GPU (a run on this machine would stop: :func:`cpu_precision_note`).

``divalign train`` checks its launch here once before relaunching (one error instead of one per rank), and
``divalign pipeline`` checks every stage here before stage 1 trains.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from . import precision
from .datasets_io import FILE_BUILDERS
from .output_dir import check_output_path
from .recipe import RecipeError, flag_values, load_yaml_mapping, parse_recipe, read_run_options, split_recipe
from .relaunch import TRAIN_ENTRY, LaunchPlan, LaunchRequest, launch_request, plan_launch
from .tokenizer_checks import check_tokenizer


def has_gpu() -> bool:
    return torch.cuda.is_available()


def _check_diversity(block: dict | None) -> None:
    if block is None:
        return
    from ..callback import DiversityConfig, load_probe_records

    try:
        config = DiversityConfig.from_dict(block)
        if Path(config.prompts).suffix in (".jsonl", ".json", ".txt"):  # a local file: cheap to read now
            load_probe_records(config)
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


def cpu_precision_note(recipe: str | os.PathLike, flags: Sequence[str], training_args: Any) -> str | None:
    """What a run of a half-precision recipe would do on this machine without a GPU, where it was checked as a CPU run
    (``use_cpu: true``): transformers refuses ``bf16``/``fp16`` without a GPU unless the recipe sets ``use_cpu``. ``None``
    when the recipe trains in full precision or sets ``use_cpu`` itself."""
    precision_name = precision.recipe_precision(training_args)
    set_here = flag_values(flags, "use_cpu")
    use_cpu = set_here[-1] if set_here else load_yaml_mapping(recipe).get("use_cpu")
    if precision_name == "no" or str(use_cpu).lower() in ("true", "1", "yes"):
        return None
    default = ", TRL's default when the recipe does not set it" if precision_name == "bf16" else ""
    return (
        f"this machine has no GPU, so the recipe's values were checked as a CPU run (use_cpu: true). It trains in "
        f"{precision_name} (`{precision_name}: true`{default}), which needs a GPU: run on this machine, it would stop "
        f"before the model loads. Run it where there is a GPU, or set `{precision_name}: false` to train on this CPU"
    )


def num_processes(accelerate_config: Path | None, launch_args: Sequence[str]) -> int:
    """The process count ``accelerate launch`` will start: ``--num_processes``, else the config's, else 1."""
    args = list(launch_args)
    if "--num_processes" in args and args.index("--num_processes") + 1 < len(args):
        return int(args[args.index("--num_processes") + 1])
    content = yaml.safe_load(accelerate_config.read_text()) if accelerate_config is not None else None
    return int(content.get("num_processes", 1)) if isinstance(content, dict) else 1


def world_size(request: LaunchRequest) -> int:
    """The process count the launch of ``request`` starts (1 in-process)."""
    if not request.relaunches:
        return 1
    config, _ = request.config
    return num_processes(config, request.launch_args(None))


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


def check_launch(
    recipe: str | os.PathLike,
    flags: Sequence[str],
    request: LaunchRequest,
    on_gpu: bool,
    entry: Sequence[str] = TRAIN_ENTRY,
) -> LaunchPlan:
    """Raise a :class:`RecipeError` when the launch of ``recipe`` with ``flags`` as ``request`` says would refuse its
    values (checked here without loading anything); returns its :class:`~divalign.launch.relaunch.LaunchPlan`."""
    from trl import ModelConfig, ScriptArguments

    from ..quiet import show_held_4bit_warnings
    from .stages import STAGES

    trainer, diversity, _ = split_recipe(recipe, list(STAGES))
    checked = [*flags, *([] if on_gpu else ["--use_cpu", "true"])]
    read_run_options(recipe, checked)
    classes = (ScriptArguments, STAGES[trainer].config_class, ModelConfig)
    with parsed_as_launched(world_size(request)):
        script_args, training_args, model_args = parse_recipe(recipe, checked, classes, trainer)
    if model_args.load_in_4bit:
        show_held_4bit_warnings()
    check_output_path(training_args.output_dir)
    check_tokenizer(training_args, model_args, local_only=True)
    _check_diversity(diversity)
    _check_dataset(script_args, training_args)
    note = None if on_gpu else cpu_precision_note(recipe, flags, training_args)
    if note is not None:
        print(f"divalign train: note: {note}", file=sys.stderr, flush=True)
    plan = plan_launch(request, recipe, flags, precision.recipe_precision(training_args), entry)
    if plan.relaunches:
        launched = precision.from_accelerate_config(plan.config_file, plan.launch_args)
        precision.check_precision(training_args, launched)
    return plan


def validate_launch(
    recipe: Path, flags: list[str], accelerate_config: Path | None, launch_args: Sequence[str], on_gpu: bool
) -> LaunchPlan:
    """Raise a :class:`RecipeError` when ``accelerate launch [--config_file accelerate_config] [launch_args] -m
    divalign.train recipe flags`` (the recipe's own launcher keys below those, its flags' above) would refuse its
    values; returns the launch's plan."""
    request = launch_request(recipe, flags, accelerate_config=accelerate_config, launch_args=launch_args, always=True)
    return check_launch(recipe, flags, request, on_gpu)
