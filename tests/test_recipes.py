"""Every shipped recipe and pipeline parses into its config with every value checked, and the SFT recipe trios
differ only in their loss.

Parsing builds the stage's config dataclass (`TOFUConfig`, `DPOConfig`, ...), so the configs' own checks
(`__post_init__`) run on every value; each recipe value must then come out of the config unchanged. Pipeline stages
are parsed with their overrides applied, as `divalign pipeline` launches them.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from trl import ModelConfig, ScriptArguments, SFTConfig

from divalign.callback import DiversityConfig
from divalign.launch.recipe import DIVALIGN_KEYS, parse_recipe, split_recipe
from divalign.launch.train import STAGES
from divalign.pipeline import load_pipeline
from divalign.pipeline.runner import override_flags
from divalign.smoke import build_smoke_assets, save_tiny_model, write_jsonl

REPO = Path(__file__).resolve().parents[1]
ALL_YAML = sorted((REPO / "recipes").rglob("*.yaml"))
PIPELINES = [p for p in ALL_YAML if "stages" in yaml.safe_load(p.read_text())]
COMPARE_SPECS = [p for p in ALL_YAML if "variants" in yaml.safe_load(p.read_text())]  # tests/test_compare_command.py
RECIPES = [p for p in ALL_YAML if p not in PIPELINES and p not in COMPARE_SPECS]
# The run's identity, not a hyper-parameter: each recipe of a trio writes its own directory and W&B run
IDENTITY_KEYS = {"output_dir", "run_name"}
LOSS_KEYS = {"sft": set(), "tofu": {"tofu_gamma", "tofu_beta"}, "gem": {"gem_beta", "gem_h"}}
# bf16 recipes are written for GPUs; this machine parses them as CPU runs
CPU = ["--use_cpu", "true"]


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def parse(recipe: Path, flags: list[str]) -> tuple[str, tuple[Any, Any, Any]]:
    trainer, diversity, env = split_recipe(recipe, list(STAGES))
    if diversity is not None:
        DiversityConfig.from_dict(diversity)
    assert all(isinstance(v, str) for v in env.values())
    classes = (ScriptArguments, STAGES[trainer].config_class, ModelConfig)
    parsed = parse_recipe(recipe, [*CPU, *flags], classes, trainer)
    assert isinstance(parsed[1], STAGES[trainer].config_class)  # built, so __post_init__ checked every value
    return trainer, parsed


def plain(value: Any) -> Any:
    """A parsed value as YAML would write it: enums by their value."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def assert_values_kept(content: dict[str, Any], parsed: tuple[Any, ...], where: str) -> None:
    """Each recipe key reaches its dataclass field with the recipe's value (a lone string may become a list)."""
    for key, value in content.items():
        if key in DIVALIGN_KEYS or key == "use_cpu":
            continue
        (holder,) = [p for p in parsed if key in {f.name for f in dataclasses.fields(p)}][:1]
        got = plain(getattr(holder, key))
        if key == "report_to" and value == "none":
            value = []  # transformers' spelling of "no tracker"
        assert got == value or got == [value], f"{where}: {key} = {value!r} in the file, {got!r} after parsing"


@pytest.mark.parametrize("recipe", RECIPES, ids=relative)
def test_every_shipped_recipe_parses_into_its_config(recipe):
    _, parsed = parse(recipe, [])
    assert_values_kept(yaml.safe_load(recipe.read_text()), parsed, relative(recipe))
    script_args, _, model_args = parsed
    assert model_args.model_name_or_path and script_args.dataset_name


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gem_h", "tanh", "`gem_h` must be one of"),
        ("gem_beta", 0, "`gem_beta` must be > 0"),
        ("loss_head", "triton", "`loss_head` must be one of"),
    ],
)
def test_a_value_only_the_config_refuses_fails_the_parse(tmp_path, key, value, message):
    """The configs' own checks run on file values, which TRL's parser takes as defaults without checking them."""
    from divalign.launch.recipe import RecipeError

    content = {**yaml.safe_load((REPO / "recipes" / "gem_sft.yaml").read_text()), key: value}
    recipe = tmp_path / "gem.yaml"
    recipe.write_text(yaml.safe_dump(content))
    with pytest.raises(RecipeError, match=message):
        parse(recipe, [])


@pytest.fixture
def pipeline_workdir(tmp_path, monkeypatch) -> Path:
    """A working directory laid out as the pipelines expect: the repo's recipes and configs, the smoke assets and a
    `make demo`-like runs/demo (a base model and the eval prompts), so that every local path they name exists."""
    for name in ("recipes", "accelerate_configs"):
        (tmp_path / name).symlink_to(REPO / name)
    build_smoke_assets(tmp_path / "runs" / "smoke")
    save_tiny_model(tmp_path / "runs" / "demo" / "base_model")
    (tmp_path / "runs" / "demo" / "world").mkdir()
    write_jsonl(tmp_path / "runs" / "demo" / "world" / "prompts_eval.jsonl", [{"prompt": "name a fruit"}])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pipeline_files_are_found():
    assert {relative(p) for p in PIPELINES} == {
        "recipes/pipelines/smoke.yaml",
        "recipes/pipelines/tofu_dpo_grpo.yaml",
        "recipes/toy/pipeline.yaml",
    }


@pytest.mark.parametrize("pipeline", PIPELINES, ids=relative)
def test_every_shipped_pipeline_stage_parses_with_its_overrides(pipeline, pipeline_workdir):
    spec = load_pipeline(relative(pipeline))
    assert spec.stages
    for stage in spec.stages:
        where = f"{relative(pipeline)} stage {stage.name!r}"
        trainer, parsed = parse(stage.recipe, override_flags(stage.overrides, stage.list_flags))
        assert trainer == stage.trainer
        content = {**yaml.safe_load(stage.recipe.read_text()), **stage.overrides}
        assert_values_kept(content, parsed, where)
    if spec.eval is not None:
        assert Path(spec.eval["prompts_path"]).is_file()


def parsed_fields(recipe: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The trainer, the values of the fields every SFT config shares (SFTConfig, ScriptArguments, ModelConfig), and
    the values of the fields the loss adds."""
    trainer, (script_args, training_args, model_args) = parse(recipe, [])
    shared = {f.name for f in dataclasses.fields(SFTConfig)}
    common = {f"args.{k}": plain(getattr(training_args, k)) for k in shared}
    common |= {f"script.{f.name}": getattr(script_args, f.name) for f in dataclasses.fields(script_args)}
    common |= {f"model.{f.name}": getattr(model_args, f.name) for f in dataclasses.fields(model_args)}
    own = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(training_args) if f.name not in shared}
    return trainer, common, own


@pytest.mark.parametrize("directory", ["recipes", "recipes/toy", "recipes/real"])
def test_sft_recipes_differ_only_in_the_loss(directory):
    recipes = [REPO / directory / f"{name}_sft.yaml" for name in ("ce", "tofu", "gem")]
    files = [yaml.safe_load(r.read_text()) for r in recipes]
    trainers = [content["trainer"] for content in files]
    assert trainers == ["sft", "tofu", "gem"]
    key_sets = [set(content) - LOSS_KEYS[t] for content, t in zip(files, trainers, strict=True)]
    assert key_sets[0] == key_sets[1] == key_sets[2]
    for content, trainer in zip(files[1:], trainers[1:], strict=True):
        assert LOSS_KEYS[trainer] <= set(content)
        differing = {k for k in key_sets[0] if content[k] != files[0][k]}
        assert differing == {"trainer"} | IDENTITY_KEYS, differing

    parsed = [parsed_fields(r) for r in recipes]
    base = parsed[0][1]
    for recipe, (_, common, _) in zip(recipes[1:], parsed[1:], strict=True):
        differing = {k for k in base if common[k] != base[k]}
        assert differing == {f"args.{k}" for k in IDENTITY_KEYS}, f"{relative(recipe)}: {sorted(differing)}"
    assert parsed[0][2] == {}  # TRL's own SFTConfig
    assert {k: v for k, v in parsed[1][2].items() if k.startswith("tofu_")} == {"tofu_gamma": 3.0, "tofu_beta": 0.8}
    assert {k: v for k, v in parsed[2][2].items() if k.startswith("gem_")} == {"gem_beta": 0.7, "gem_h": "linear"}
    assert parsed[1][2]["loss_head"] == parsed[2][2]["loss_head"]  # the same head for both losses
