"""Pipeline files: parse and validate a multi-stage run (e.g. SFT → DPO → GRPO) before anything trains.

Every check here is cheap and offline, so a typo in the fifth stage fails in a second instead of after the first
four stages have trained. Paths in a pipeline file are relative to the working directory, like recipe paths.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..launch.model_path import check_model_reference, looks_local
from ..launch.recipe import (
    DIVALIGN_KEYS,
    LAUNCH_KEYS,
    RUN_OPTIONS,
    RecipeError,
    check_known_keys,
    field_names,
    load_yaml_mapping,
    split_recipe,
)

PIPELINE_KEYS = {"name", "output_root", "base_model", "accelerate_config", "launch_args", "stages", "eval"}
STAGE_KEYS = {"name", "recipe", "overrides", "output_dir", "accelerate_config", "launch_args", "adapters"}
ADAPTER_MODES = ("merge", "continue")
# The pipeline sets these flags itself: letting a stage override them would break the lineage or the resume logic
RESERVED_OVERRIDES = ("output_dir", "model_name_or_path", "resume_from_checkpoint")
EVAL_STAGE = "eval"
LINEAGE_DIR = "lineage"
# `divalign pipeline` eval: keys → `evaluate_lineage`'s prompts and its `EvalOptions` fields (the `divalign eval` flag names)
EVAL_KEY_ALIASES = {"prompts": "prompts_path", "samples": "num_samples", "bootstrap": "n_bootstrap"}
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PipelineError(ValueError):
    """A pipeline that cannot run, with the file and stage at fault in the message."""


@dataclass(frozen=True)
class StageSpec:
    """One stage, resolved: which recipe it runs, where it writes, how it is launched."""

    name: str
    recipe: Path
    output_dir: Path
    trainer: str
    overrides: dict[str, Any] = field(default_factory=dict)
    accelerate_config: str | None = None  # a preset name or a file path, as `divalign train` takes it
    launch_args: tuple[str, ...] = ()
    adapters: str | None = None
    uses_peft: bool = False
    list_flags: frozenset[str] = frozenset()

    @property
    def accelerate_config_file(self) -> Path | None:
        """The stage's own accelerate config file (a preset's file for a preset name)."""
        from ..launch.relaunch import resolve_accelerate_config

        return None if self.accelerate_config is None else resolve_accelerate_config(self.accelerate_config)[0]

    def sets(self, key: str) -> bool:
        """Whether the stage's recipe or overrides set ``key`` explicitly."""
        return key in self.overrides or key in load_yaml_mapping(self.recipe)


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline: stages in order, each loading the previous stage's output."""

    path: Path
    name: str
    output_root: Path
    base_model: str
    stages: tuple[StageSpec, ...]
    eval: dict[str, Any] | None = None

    @property
    def lineage_dir(self) -> Path:
        return self.output_root / LINEAGE_DIR

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise PipelineError(f"{self.path}: no stage named {name!r}; stages are {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]


def _read_pipeline_file(path: Path) -> dict[str, Any]:
    try:
        return load_yaml_mapping(path, kind="pipeline")
    except RecipeError as error:
        raise PipelineError(str(error)) from error


def _known(keys: list[str], known: set[str], where: str, what: str) -> None:
    try:
        check_known_keys(keys, known, where, what)
    except RecipeError as error:
        raise PipelineError(f"{error}; valid keys: {', '.join(sorted(known))}") from error


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise PipelineError(f"{where}: `launch_args` must be a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _existing_file(value: Any, where: str, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise PipelineError(f"{where}: `{what}` must be a file path, got {value!r}")
    path = Path(value)
    if not path.is_file():
        raise PipelineError(f"{where}: {what} file not found: {path}")
    return path


def _accelerate_config(value: Any, where: str) -> str | None:
    """A stage's `accelerate_config`: a preset name or an existing file."""
    from ..launch.relaunch import resolve_accelerate_config

    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise PipelineError(f"{where}: `accelerate_config` must be a preset name or a file path, got {value!r}")
    try:
        resolve_accelerate_config(value)
    except RecipeError as error:
        raise PipelineError(f"{where}: {error}") from error
    return value


def _recipe_keys(recipe: Path, overrides: dict[str, Any], where: str) -> tuple[str, dict]:
    """Parse the recipe's divalign keys and check every key (recipe and overrides) against the trainer's fields."""
    from trl import ModelConfig, ScriptArguments

    from ..launch.stages import STAGES

    try:
        trainer, _, _ = split_recipe(recipe, list(STAGES))
        content = load_yaml_mapping(recipe)
        known = field_names((ScriptArguments, STAGES[trainer].config_class, ModelConfig))
        check_known_keys(
            [k for k in content if k not in DIVALIGN_KEYS], known, f"{recipe} (trainer: {trainer})", "recipe"
        )
        check_known_keys(
            list(overrides),
            known | set(RUN_OPTIONS) | set(LAUNCH_KEYS),
            f"{where} overrides (trainer: {trainer})",
            "override",
        )
    except RecipeError as error:
        raise PipelineError(f"{where}: {error}") from error
    return trainer, content


def _list_flags(trainer: str) -> frozenset[str]:
    """Flags TRL's parser reads as several values (``--lora_target_modules q_proj v_proj``), not as one JSON string."""
    from trl import ModelConfig, ScriptArguments, TrlParser

    from ..compat import multi_value_flags
    from ..launch.stages import STAGES

    return multi_value_flags(TrlParser([ScriptArguments, STAGES[trainer].config_class, ModelConfig]))


def _overrides(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PipelineError(f"{where}: `overrides` must be a mapping of divalign.train flags, got {value!r}")
    overrides = {str(k).replace("-", "_"): v for k, v in value.items()}  # `max-steps` as the flag --max-steps
    for key in RESERVED_OVERRIDES:
        if key in overrides:
            raise PipelineError(
                f"{where}: `overrides` cannot set {key!r}; the pipeline sets it (use the stage's "
                "`output_dir` key to choose where it writes)"
            )
    return overrides


def _parse_stage(raw: Any, index: int, defaults: dict[str, Any], output_root: Path, path: Path) -> StageSpec:
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: stages[{index}] must be a mapping with at least `name` and `recipe`, got {raw!r}")
    name = raw.get("name")
    where = f"{path}: stage {name!r}" if name else f"{path}: stages[{index}]"
    _known(list(raw), STAGE_KEYS, where, "stage")
    if not isinstance(name, str) or not _STAGE_NAME.match(name):
        raise PipelineError(f"{where}: `name` must be a word of letters, digits, '_', '.', '-', got {name!r}")
    if name == EVAL_STAGE:
        raise PipelineError(f"{where}: the name {EVAL_STAGE!r} is reserved for the lineage evaluation")
    recipe = _existing_file(raw.get("recipe"), where, "recipe")
    adapters = raw.get("adapters")
    if adapters is not None and adapters not in ADAPTER_MODES:
        raise PipelineError(
            f"{where}: unknown `adapters` value {adapters!r}; expected one of {', '.join(ADAPTER_MODES)}"
        )
    overrides = _overrides(raw.get("overrides"), where)
    trainer, content = _recipe_keys(recipe, overrides, where)
    config = raw.get("accelerate_config", defaults["accelerate_config"])
    launch_args = raw["launch_args"] if "launch_args" in raw else defaults["launch_args"]
    use_peft = {**content, **overrides}.get("use_peft")
    return StageSpec(
        name=name,
        recipe=recipe,
        output_dir=Path(raw["output_dir"]) if raw.get("output_dir") else output_root / name,
        trainer=trainer,
        overrides=overrides,
        accelerate_config=_accelerate_config(config, where),
        launch_args=_string_list(launch_args, where),
        adapters=adapters,
        uses_peft=str(use_peft).lower() == "true",  # a YAML bool or a flag-style string
        list_flags=_list_flags(trainer),
    )


def _parse_eval(raw: Any, path: Path) -> dict[str, Any] | None:
    if raw is None:
        return None
    from ..evaluation.options import EvalOptions

    if not isinstance(raw, dict) or "prompts" not in raw:
        raise PipelineError(f"{path}: `eval` must be a mapping with at least `prompts`, got {raw!r}")
    flag_names = {argument: key for key, argument in EVAL_KEY_ALIASES.items()}
    arguments = ["prompts_path", *(option.name for option in dataclasses.fields(EvalOptions))]
    accepted = {flag_names.get(p, p) for p in arguments} - {"out_dir"}
    _known(list(raw), accepted, f"{path} eval", "eval")
    _check_eval_prompts(raw, path)
    return {EVAL_KEY_ALIASES.get(key, key): value for key, value in raw.items()}


def is_local_prompts(source: str) -> bool:
    """Whether an eval `prompts` source is on this machine (a file, a saved dataset, a data folder), not a Hub id."""
    from ..prompts import FILE_SUFFIXES

    return Path(source).expanduser().exists() or Path(source).suffix in FILE_SUFFIXES or looks_local(source)


def _check_eval_prompts(raw: dict[str, Any], path: Path) -> None:
    """Read a local prompt source now, as `divalign eval` will (so a bad one fails before stage 1 trains); a Hub
    dataset id is read when the eval runs."""
    from ..prompts import load_prompts

    source = raw["prompts"]
    if not isinstance(source, str) or not source.strip():
        raise PipelineError(
            f"{path}: eval `prompts` must be a prompts file, a dataset folder or a Hub dataset id, got {source!r}"
        )
    if not is_local_prompts(source):
        return
    if not Path(source).expanduser().exists():
        raise PipelineError(f"{path}: eval prompts file not found: {source}")
    try:
        load_prompts(source, split=raw.get("prompts_split", "test"), column=raw.get("prompts_column"))
    except (ValueError, FileNotFoundError) as error:
        raise PipelineError(f"{path}: eval prompts: {error}") from error


def _check_base_model(base_model: Any, path: Path) -> str:
    try:
        check_model_reference(base_model, "base_model")
    except RecipeError as error:
        raise PipelineError(f"{path}: {error}") from error
    return base_model


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_outputs(spec: PipelineSpec) -> None:
    """Two stages never write the same directory, nor one inside another, nor over the base model, nor into the
    output_root itself (which holds the pipeline's state and the other stages)."""
    owners: list[tuple[str, Path]] = [(f"stage {s.name!r}", s.output_dir.resolve()) for s in spec.stages]
    root = spec.output_root.resolve()
    for owner, directory in owners:
        if _inside(root, directory):
            raise PipelineError(
                f"{spec.path}: {owner} writes into {directory}, which is (or holds) the output_root "
                f"{spec.output_root}, where the pipeline keeps its state and the other stages; give it "
                "its own directory, e.g. the default output_root/<stage>"
            )
    if spec.eval is not None:
        owners.append(("the lineage eval", spec.lineage_dir.resolve()))
    for i, (owner, directory) in enumerate(owners):
        for other, other_dir in owners[:i]:
            if _inside(directory, other_dir) or _inside(other_dir, directory):
                raise PipelineError(
                    f"{spec.path}: {owner} and {other} write the same output directory "
                    f"({directory} and {other_dir}); give each stage its own `output_dir`"
                )
    base = Path(spec.base_model).expanduser()
    if base.exists() or looks_local(spec.base_model):
        for owner, directory in owners:
            if _inside(base.resolve(), directory) or _inside(directory, base.resolve()):
                raise PipelineError(
                    f"{spec.path}: {owner} writes into {directory}, which holds the pipeline's input "
                    f"base_model {spec.base_model}; the output would overwrite its own input"
                )


def _check_adapters(spec: PipelineSpec) -> None:
    for previous, stage in zip(spec.stages, spec.stages[1:], strict=False):
        where = f"{spec.path}: stage {stage.name!r}"
        if previous.uses_peft and stage.adapters is None:
            raise PipelineError(
                f"{where} follows the LoRA stage {previous.name!r} (use_peft); set `adapters: merge` "
                "to train a full model on the merged weights or `adapters: continue` to keep training "
                "the same adapter"
            )
        if stage.adapters == "continue" and stage.uses_peft:
            raise PipelineError(
                f"{where}: `adapters: continue` keeps training {previous.name!r}'s adapter, so the "
                "stage must not add a new one: remove `use_peft` from its recipe/overrides, or use "
                "`adapters: merge` to put a fresh adapter on the merged model"
            )


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read and validate the pipeline file at ``path``: every recipe is parsed, no model is loaded."""
    path = Path(path)
    return pipeline_from_mapping(_read_pipeline_file(path), path)


def pipeline_from_mapping(content: dict[str, Any], path: Path) -> PipelineSpec:
    """Validate a pipeline given as the mapping its file would hold (``path``: the file named in errors); `divalign
    compare` builds one per cell."""
    _known(list(content), PIPELINE_KEYS, str(path), "pipeline")
    for key in ("name", "output_root", "stages"):
        if not content.get(key):
            raise PipelineError(f"{path}: `{key}` is required")
    if not isinstance(content["name"], str):
        raise PipelineError(f"{path}: `name` must be a string, got {content['name']!r}")
    if not isinstance(content["stages"], list):
        raise PipelineError(f"{path}: `stages` must be a list of stages, got {content['stages']!r}")
    base_model = _check_base_model(content.get("base_model"), path)
    output_root = Path(content["output_root"])
    defaults = {"accelerate_config": content.get("accelerate_config"), "launch_args": content.get("launch_args")}
    names = [raw.get("name") for raw in content["stages"] if isinstance(raw, dict)]
    duplicates = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if duplicates:
        raise PipelineError(f"{path}: duplicate stage name {duplicates[0]!r}; stage names must be unique")
    stages = [_parse_stage(raw, i, defaults, output_root, path) for i, raw in enumerate(content["stages"])]
    spec = PipelineSpec(
        path, content["name"], output_root, base_model, tuple(stages), _parse_eval(content.get("eval"), path)
    )
    _check_outputs(spec)
    _check_adapters(spec)
    return spec
