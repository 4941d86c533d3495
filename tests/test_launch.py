"""`divalign train RECIPE`: the launch a recipe asks for (divalign.launch), checked without launching anything.

Launcher keys relaunch through `accelerate launch ... -m divalign.train`, command-line flags beat the recipe (launcher
keys included), presets ship in the package, a preset trains in the recipe's precision, ranks of a launch never
relaunch. The launches themselves run in tests/test_launch_runs.py and tests/test_multinode.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from divalign.cli import main as cli_main
from divalign.launch import train
from divalign.launch.checks import check_launch
from divalign.launch.recipe import RecipeError, parse_recipe, split_launch_flags
from divalign.launch.relaunch import (
    inside_distributed_launch,
    launch_request,
    plan_launch,
    preset_directory,
    preset_names,
    resolve_accelerate_config,
    split_launch_args,
)
from divalign.smoke import build_smoke_assets

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
LAUNCHED_RANK_ENV = ("ACCELERATE_MIXED_PRECISION", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


@pytest.fixture(autouse=True)
def not_a_rank(monkeypatch):
    for name in LAUNCHED_RANK_ENV:
        monkeypatch.delenv(name, raising=False)


def recipe_with(tmp_path: Path, assets: Path, **keys) -> Path:
    content = yaml.safe_load(SMOKE_RECIPE.read_text())
    content.update(model_name_or_path=str(assets / "model"), dataset_name=str(assets / "train.jsonl"), **keys)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def plan(recipe: Path, flags: list[str], **stage):
    return check_launch(recipe, flags, launch_request(recipe, flags, **stage), on_gpu=False)


def option(args, name: str) -> str:
    return args[args.index(name) + 1]


# Presets


def test_presets_ship_in_the_package_and_the_repository_links_to_them():
    assert preset_names() == ["ddp", "zero2", "zero3"]
    assert preset_directory() == Path(__import__("divalign").__file__).parent / "accelerate_configs"
    assert (REPO / "accelerate_configs").resolve() == preset_directory().resolve()  # one copy, not two
    path, is_preset = resolve_accelerate_config("zero3")
    assert is_preset and yaml.safe_load(path.read_text())["deepspeed_config"]["zero_stage"] == 3
    path, is_preset = resolve_accelerate_config("accelerate_configs/zero3.yaml")
    assert not is_preset and path.read_text() == (preset_directory() / "zero3.yaml").read_text()
    with pytest.raises(RecipeError, match=r"accelerate_config 'zero4' is neither a file nor a preset; presets: ddp, "):
        resolve_accelerate_config("zero4")


@pytest.mark.slow
def test_a_built_wheel_carries_the_presets(tmp_path):
    """What `pip install divalign` gets: the presets inside the package, so `accelerate_config: zero3` works there.
    Built from a copy of the sources (setuptools writes build/ next to them)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    built = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("divalign-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"divalign/accelerate_configs/{name}.yaml" for name in preset_names()} <= names


# Which launch


def test_without_launcher_keys_the_run_is_in_process(tmp_path, assets):
    recipe = recipe_with(tmp_path, assets)
    launch = plan(recipe, ["--max_steps", "2"])
    assert not launch.relaunches
    assert launch.shell() == f"python -m divalign.train {recipe} --max_steps 2"


def test_launcher_keys_relaunch_through_accelerate_with_the_module_entry(tmp_path, assets):
    recipe = recipe_with(tmp_path, assets, accelerate_config="zero2", num_processes=2)
    launch = plan(recipe, ["--max_steps", "2"])
    assert launch.command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args = launch.launch_args
    assert option(args, "--config_file") == str(preset_directory() / "zero2.yaml")
    assert option(args, "--num_processes") == "2"
    assert launch.command[-5:] == ["-m", "divalign.train", str(recipe), "--max_steps", "2"]
    assert launch.shell().startswith(f"accelerate launch --config_file {preset_directory() / 'zero2.yaml'} ")


def test_flags_beat_the_recipe_launcher_keys_included(tmp_path, assets):
    recipe = recipe_with(tmp_path, assets, accelerate_config="zero2", num_processes=4, main_process_port=1234)
    flags = ["--accelerate_config", "zero3", "--num_processes=2", "--max_steps", "2", "--num_processes", "3"]
    launch = plan(recipe, flags)
    assert option(launch.launch_args, "--config_file") == str(preset_directory() / "zero3.yaml")
    assert option(launch.launch_args, "--num_processes") == "3"  # the last flag wins, as for every other key
    assert option(launch.launch_args, "--main_process_port") == "1234"  # not overridden: the recipe's
    # the launched ranks get the training flags only: they must not relaunch, and TRL's parser must not see them
    assert launch.train_flags == ("--max_steps", "2")


def test_flags_spelled_with_dashes_as_trls_parser_takes_them(tmp_path, assets, capsys):
    recipe = recipe_with(tmp_path, assets)
    flags = ["--accelerate-config", "zero2", "--num-processes=2", "--max-steps", "2", "--stop-on-nonfinite", "false"]
    launch = plan(recipe, flags)
    assert option(launch.launch_args, "--config_file") == str(preset_directory() / "zero2.yaml")
    assert option(launch.launch_args, "--num_processes") == "2"
    assert launch.train_flags == ("--max_steps", "2", "--stop_on_nonfinite", "false")
    assert cli_main(["train", str(recipe), "--dry_run", "--num-processes", "2", "--max-steps", "0"]) == 1
    assert "`max_steps` must be -1 (train for num_train_epochs) or a step count >= 1, got 0" in capsys.readouterr().err


def test_a_preset_trains_in_the_recipes_precision_a_file_as_written(tmp_path, assets):
    recipe = recipe_with(tmp_path, assets, accelerate_config="zero2")
    assert option(plan(recipe, []).launch_args, "--mixed_precision") == "no"  # the smoke recipe is fp32
    assert option(plan(recipe, ["--bf16", "true"]).launch_args, "--mixed_precision") == "bf16"
    # the same file named by its path is a config of the user's: its bf16 disagrees with the fp32 recipe
    with pytest.raises(RecipeError, match=r"trains in full precision .* asks for mixed_precision 'bf16'"):
        plan(recipe, ["--accelerate_config", "accelerate_configs/zero2.yaml"])


def test_a_pipeline_stage_sits_between_the_recipe_and_its_overrides(tmp_path, assets):
    recipe = recipe_with(tmp_path, assets, accelerate_config="zero3", num_processes=8)
    stage = {"accelerate_config": "ddp", "launch_args": ["--num-processes=2", "--cpu"]}
    launch = plan(recipe, [], **stage)
    assert option(launch.launch_args, "--config_file") == str(preset_directory() / "ddp.yaml")
    assert option(launch.launch_args, "--num_processes") == "2" and "--cpu" in launch.launch_args
    assert option(plan(recipe, ["--num_processes", "1"], **stage).launch_args, "--num_processes") == "1"


def test_launch_args_are_split_into_launcher_keys_and_the_rest():
    settings, rest = split_launch_args(["--config_file=c.yaml", "--num-machines", "2", "--cpu", "--mixed_precision", "no"])
    assert settings == {"accelerate_config": "c.yaml", "num_machines": "2"}
    assert rest == ["--cpu", "--mixed_precision", "no"]


def test_the_recipes_launcher_keys_never_reach_trls_parser(tmp_path, assets):
    """Inside a launch the recipe still holds them: they are divalign's keys, like `trainer:`."""
    from trl import ModelConfig, ScriptArguments

    from divalign.trainers.tofu_config import TOFUConfig

    keys = {"accelerate_config": "ddp", "num_processes": 2, "num_machines": 1, "machine_rank": 0}
    recipe = recipe_with(tmp_path, assets, main_process_ip="127.0.0.1", main_process_port=29500, **keys)
    classes = (ScriptArguments, TOFUConfig, ModelConfig)
    parsed = parse_recipe(recipe, ["--num_processes", "1", "--use_cpu", "true"], classes, "tofu")
    assert parsed[1].tofu_gamma == 3.0
    assert split_launch_flags(["--num_processes", "1", "--lr", "2"]) == ({"num_processes": "1"}, ["--lr", "2"])


@pytest.mark.parametrize(
    ("keys", "flags", "message"),
    [
        ({"num_processes": 0}, [], r"`num_processes` must be >= 1, got 0"),
        ({}, ["--num_processes", "two"], r"`num_processes` in the command line must be of type int .*'two'"),
        ({"num_processes": "2x"}, [], r"`num_processes` in .*recipe\.yaml must be of type int"),
        ({"num_machines": 2}, [], r"`num_machines` is 2: set `main_process_ip`"),
        ({"num_machines": 2, "main_process_ip": "10.0.0.1"}, ["--machine_rank", "2"], r"`machine_rank` must be in 0\.\.1"),
        ({"main_process_port": 70000}, [], r"`main_process_port` must be a port number"),
        ({"accelerate_config": ""}, [], r"`accelerate_config` in .* must be a non-empty string"),
        ({}, ["--accelerate_config"], r"flag --accelerate_config needs a value"),
    ],
)
def test_bad_launcher_values_name_the_key_and_where(tmp_path, assets, keys, flags, message):
    recipe = recipe_with(tmp_path, assets, **keys)
    with pytest.raises(RecipeError, match=message):
        launch_request(recipe, flags)


# divalign train / python -m divalign.train


def test_dry_run_prints_the_launch_of_a_gpu_recipe(capsys, monkeypatch):
    """recipes/tofu_sft.yaml says zero3 on 8 GPUs: checked here (as a CPU run on a machine without GPU), printed."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("divalign.launch.checks.has_gpu", lambda: False)
    assert cli_main(["train", "recipes/tofu_sft.yaml", "--dry-run", "--num_processes", "4"]) == 0
    out = capsys.readouterr().out
    zero3 = preset_directory() / "zero3.yaml"
    launch = f"accelerate launch --config_file {zero3} --num_processes 4 --mixed_precision bf16 -m divalign.train"
    assert f"divalign train: launch: {launch} recipes/tofu_sft.yaml\n" in out


def test_a_recipe_error_is_reported_before_anything_launches(tmp_path, assets, capsys, monkeypatch):
    monkeypatch.setattr(train, "run_command", lambda *a: pytest.fail("launched"))
    recipe = recipe_with(tmp_path, assets, num_processes=2, tofu_beta=-1.0)
    assert train.main([str(recipe)]) == 1
    assert "divalign.train: error:" in capsys.readouterr().err


def test_the_relaunch_carries_the_recipes_env_block(tmp_path, assets, monkeypatch):
    launched = []
    monkeypatch.setattr(train, "run_command", lambda command, env: launched.append((command, env)) or 0)
    recipe = recipe_with(tmp_path, assets, num_processes=2, env={"DIVALIGN_TEST_SETTING": "on"})
    assert train.main([str(recipe), "--max_steps", "1"]) == 0
    ((command, env),) = launched
    assert command[command.index("-m", 3) :] == ["-m", "divalign.train", str(recipe), "--max_steps", "1"]
    assert env["DIVALIGN_TEST_SETTING"] == "on"


@pytest.mark.parametrize("variable", LAUNCHED_RANK_ENV)
def test_a_rank_of_a_launch_runs_in_process(tmp_path, assets, monkeypatch, variable):
    """`accelerate launch ... -m divalign.train RECIPE` (and torchrun): the recipe's launcher keys were the
    launcher's business; the rank trains, it does not launch again. A launcher flag there is refused."""
    ran = []
    monkeypatch.setenv(variable, "0")
    monkeypatch.setattr(train, "run_stage", lambda recipe, flags: ran.append((recipe, list(flags))))
    monkeypatch.setattr(train, "run_command", lambda *a: pytest.fail("relaunched inside a launch"))
    assert inside_distributed_launch()
    recipe = recipe_with(tmp_path, assets, accelerate_config="zero3", num_processes=8)
    assert train.main([str(recipe), "--max_steps", "1"]) == 0
    assert ran == [(str(recipe), ["--max_steps", "1"])]
    with pytest.raises(RecipeError, match=r"--num_processes is a launcher setting, but this process already is a rank"):
        train.launch_or_run(str(recipe), ["--num_processes", "2"])


def test_plan_launch_without_a_relaunch_keeps_the_flags(tmp_path, assets):
    recipe = recipe_with(tmp_path, assets)
    launch = plan_launch(launch_request(recipe, []), recipe, ["--seed", "1"], "no")
    assert launch.command == [sys.executable, "-m", "divalign.train", str(recipe), "--seed", "1"]
