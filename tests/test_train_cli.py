"""`python -m divalign.train RECIPE`: recipes parse, bad input fails before training, runs save and resume."""

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM
from trl import ModelConfig, ScriptArguments

from divalign.diversity.callback import DiversityConfig
from divalign.recipe import RecipeError, parse_recipe, split_recipe
from divalign.smoke import build_smoke_assets, write_jsonl
from divalign.train import STAGES, main, run_stage

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
STAGE_RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def smoke_flags(assets: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(assets / "model"),
        "--dataset_name", str(assets / "train.jsonl"),
        "--output_dir", str(output_dir),
        *extra,
    ]  # fmt: skip


def write_recipe(tmp_path: Path, **changes) -> Path:
    content = yaml.safe_load(SMOKE_RECIPE.read_text())
    content.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        content.pop(key)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def run_error(recipe: Path, flags: list[str]) -> str:
    with pytest.raises(RecipeError) as caught:
        run_stage(str(recipe), flags)
    return str(caught.value)


@pytest.mark.parametrize("recipe", STAGE_RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_parse(recipe):
    trainer, diversity, _ = split_recipe(recipe, list(STAGES))
    if diversity is not None:
        DiversityConfig.from_dict(diversity)

    # bf16 recipes are written for GPUs; this machine parses them as CPU runs
    script_args, training_args, model_args = parse_recipe(
        recipe, ["--use_cpu", "true"], (ScriptArguments, STAGES[trainer].config_class, ModelConfig), trainer
    )
    assert model_args.model_name_or_path and script_args.dataset_name and training_args.output_dir


def test_smoke_recipe_trains_saves_and_reloads(assets, tmp_path):
    out = tmp_path / "run"
    assert main([str(SMOKE_RECIPE), *smoke_flags(assets, out, "--tofu_beta", "0.9")]) == 0
    resolved = yaml.safe_load((out / "divalign_recipe.yaml").read_text())
    assert resolved["trainer"] == "tofu" and resolved["tofu_beta"] == 0.9 and resolved["tofu_gamma"] == 3.0
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size > 0
    assert (out / "tokenizer.json").is_file()


def test_interrupted_run_resumes_from_its_last_checkpoint(assets, tmp_path):
    out = tmp_path / "run"
    run_stage(str(SMOKE_RECIPE), smoke_flags(assets, out, "--max_steps", "5"))
    assert "is not empty" in run_error(SMOKE_RECIPE, smoke_flags(assets, out, "--max_steps", "10"))
    run_stage(str(SMOKE_RECIPE), smoke_flags(assets, out, "--max_steps", "10", "--resume_from_checkpoint", "true"))
    state = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [5, 10]


@pytest.mark.parametrize(
    ("changes", "flags", "message"),
    [
        ({"lerning_rate": 0.1}, [], "unknown recipe key 'lerning_rate'.*did you mean 'learning_rate'"),
        ({}, ["--tofu_bta", "0.5"], "unknown flag key 'tofu_bta'"),
        ({"trainer": None}, [], "has no `trainer:` key"),
        ({"trainer": "ppo"}, [], "unknown trainer 'ppo'"),
        ({"tofu_beta": 0}, [], r"recipe.yaml: `tofu_beta` must be > 0"),
        ({"tofu_gamma": "three"}, [], "recipe key .tofu_gamma. in .* must be of type float, got .three."),
        ({"diversity": [1, 2]}, [], "`diversity:` must be a mapping"),
    ],
)
def test_bad_recipes_fail_before_loading(tmp_path, changes, flags, message):
    with pytest.raises(RecipeError, match=message):
        run_stage(str(write_recipe(tmp_path, **changes)), flags)


def test_missing_dataset_column(assets, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}])
    flags = smoke_flags(assets, tmp_path / "out", "--dataset_name", str(data))
    message = run_error(SMOKE_RECIPE, flags)
    assert "missing columns" in message and "prompt+completion" in message and "question" in message


def test_missing_dataset_file(assets, tmp_path):
    flags = smoke_flags(assets, tmp_path / "out", "--dataset_name", str(tmp_path / "nope.jsonl"))
    assert "dataset file not found" in run_error(SMOKE_RECIPE, flags)


def test_dataset_without_trainable_tokens(assets, tmp_path):
    # The prompt alone is longer than max_length, so truncation leaves no completion token
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--max_length", "4"))
    assert "no trainable tokens" in message and "max_length=4" in message


def test_output_dir_checks(assets, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "model.safetensors").write_text("precious")
    assert "is not empty" in run_error(SMOKE_RECIPE, smoke_flags(assets, full))
    assert (full / "model.safetensors").read_text() == "precious"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "is not writable" in run_error(SMOKE_RECIPE, smoke_flags(assets, blocker / "out"))
    flags = smoke_flags(assets, tmp_path / "fresh", "--resume_from_checkpoint", "true")
    assert "holds no checkpoint" in run_error(SMOKE_RECIPE, flags)


def test_main_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml")]) == 1
    assert "recipe file not found" in capsys.readouterr().err


def test_diversity_block_logs_curves_from_the_recipe(assets, tmp_path):
    prompts = tmp_path / "probe.txt"
    prompts.write_text("say a word w1\nsay a word w2\nsay a word w3\n")
    recipe = write_recipe(
        tmp_path,
        diversity={
            "prompts": str(prompts),
            "samples_per_prompt": 3,
            "max_new_tokens": 4,
            "every_steps": 5,
            "metrics": ["distinct_1", "distinct_2", "exact_dup_rate"],
        },
    )
    out = tmp_path / "run"
    run_stage(str(recipe), smoke_flags(assets, out))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [entry["step"] for entry in history if "diversity/distinct_1" in entry]
    assert steps == [0, 5, 10]
    assert yaml.safe_load((out / "divalign_recipe.yaml").read_text())["diversity"]["every_steps"] == 5


def test_bad_diversity_block_fails_before_loading(assets, tmp_path):
    recipe = write_recipe(tmp_path, diversity={"prompts": "p.txt", "samples": 4})
    with pytest.raises(RecipeError, match=r"diversity: .*samples"):
        run_stage(str(recipe), smoke_flags(assets, tmp_path / "out"))
