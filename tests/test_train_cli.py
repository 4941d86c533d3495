"""`python -m divalign.train RECIPE`: recipes parse, bad input fails before training, runs save and resume."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM
from trl import ModelConfig, ScriptArguments

from divalign.diversity.callback import DiversityConfig
from divalign.launch.recipe import RecipeError, parse_recipe, split_recipe
from divalign.launch.run_lock import LOCK_FILE
from divalign.launch.train import STAGES, main, run_stage
from divalign.smoke import build_smoke_assets, write_jsonl

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
    assert resolved["stop_on_nonfinite"] is True and "resumes" not in resolved
    before = AutoModelForCausalLM.from_pretrained(assets / "model").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert after.keys() == before.keys() and any(not after[k].equal(before[k]) for k in before)  # trained, saved
    # reloading gives the trained model's outputs: tests/test_saved_models.py
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "divalign_finished.json").read_text())["global_step"] == 10
    assert not (out / LOCK_FILE).exists()  # released at the end


@pytest.mark.parametrize(
    ("changes", "flags", "message"),
    [
        ({"lerning_rate": 0.1}, [], "unknown recipe key 'lerning_rate'.*did you mean 'learning_rate'"),
        ({}, ["--tofu_bta", "0.5"], "unknown flag key 'tofu_bta'"),
        ({"trainer": None}, [], "has no `trainer:` key"),
        ({"trainer": "ppo"}, [], "unknown trainer 'ppo'"),
        ({"tofu_beta": 0}, [], r"recipe.yaml: `tofu_beta` must be > 0"),
        (
            {"tofu_gamma": "three"},
            [],
            r"recipe key .tofu_gamma. in .* must be of type float \(a number\), got .three.",
        ),
        ({"learning_rate": "fast"}, [], r"recipe key 'learning_rate' .* must be of type float .*got 'fast'"),
        (
            {"learning_rate": float("nan")},
            [],
            r"`learning_rate` must be a finite number, got nan \(recipe key 'learning_rate' in .*recipe.yaml\)",
        ),
        ({"max_steps": "2.5"}, [], r"recipe key 'max_steps' .* must be of type int \(a whole number\), got '2.5'"),
        ({}, ["--learning_rate", "fast"], r"flag --learning_rate must be of type float .*got 'fast'"),
        ({}, ["--lr_scheduler_type", "wavy"], r"argument --lr_scheduler_type.*invalid choice: 'wavy'"),
        ({"stop_on_nonfinite": "sometimes"}, [], r"'stop_on_nonfinite' in .*recipe.yaml must be true or false"),
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
    assert "holds no complete checkpoint" in run_error(SMOKE_RECIPE, flags)
    flags = smoke_flags(assets, full, "--resume_from_checkpoint", "false")  # not a path named "false"
    assert "is not empty (model.safetensors)" in run_error(SMOKE_RECIPE, flags)


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


# Values written as PyYAML reads them: `1e-5` without a dot is a string in YAML 1.1, a float for TRL's parser


def test_numbers_written_without_a_dot_are_numbers(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(SMOKE_RECIPE.read_text() + "learning_rate: 1e-5\nwarmup_steps: 5e-2\nsave_steps: 1e1\n")
    assert yaml.safe_load(recipe.read_text())["learning_rate"] == "1e-5"  # what PyYAML hands over
    classes = (ScriptArguments, STAGES["tofu"].config_class, ModelConfig)
    _, args, _ = parse_recipe(recipe, ["--max_steps", "2e1", "--tofu_beta=5e-1"], classes, "tofu")
    assert (args.learning_rate, args.warmup_steps, args.save_steps) == (1e-5, 0.05, 10)
    assert (args.max_steps, args.tofu_beta) == (20, 0.5) and isinstance(args.max_steps, int)


# Bad inputs fail before the model loads, naming the file, line or key


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a stage gets as far as building its trainer (loading the model)."""

    def build(run):
        raise AssertionError("the model was loaded before the bad input was reported")

    for name, stage in list(STAGES.items()):
        monkeypatch.setitem(STAGES, name, dataclasses.replace(stage, build=build))


def test_empty_dataset_file(assets, tmp_path, no_model_load):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(empty)))
    assert message == f"dataset file {empty} is empty (dataset_name)"
    assert not (tmp_path / "out").exists()


def test_malformed_jsonl_names_file_and_line(assets, tmp_path, no_model_load):
    rows = (assets / "train.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*rows[:3], rows[3][:-1], *rows[4:]]) + "\n")  # line 4 lost its closing brace
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(bad)))
    assert message.startswith(f"dataset file {bad}, line 4: not valid JSON")
    bad.write_text(rows[0] + "\n[1, 2]\n")
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(bad)))
    assert message.startswith(f"dataset file {bad}, line 2: a JSON list, not an object")
    assert not (tmp_path / "out").exists()


def test_model_path_that_does_not_exist(assets, tmp_path, no_model_load):
    missing = tmp_path / "models" / "tiny"
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--model_name_or_path", str(missing)))
    assert message == f"model_name_or_path {missing} does not exist (a local path, not a Hub id)"
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--model_name_or_path", str(tmp_path)))
    assert message == f"model_name_or_path {tmp_path} has no config.json; expected a saved checkpoint directory"
    flags = smoke_flags(assets, tmp_path / "out", "--model_name_or_path", "divalign-tests/no-such-model")
    assert (
        "divalign-tests/no-such-model is neither a local directory nor a Hub model in the local cache, and the "
        "Hub is offline (HF_HUB_OFFLINE=1)" in run_error(SMOKE_RECIPE, flags)
    )
    assert not (tmp_path / "out").exists()


def test_evaluation_without_a_test_split(assets, tmp_path, no_model_load):
    flags = smoke_flags(assets, tmp_path / "out", "--eval_strategy", "steps", "--eval_steps", "5")
    message = run_error(SMOKE_RECIPE, flags)
    assert "eval_strategy is 'steps' but dataset" in message and "has no split 'test' (dataset_test_split)" in message
    assert "it has ['train']" in message and not (tmp_path / "out").exists()


def test_unreadable_diversity_prompts_fail_before_the_model_loads(assets, tmp_path, no_model_load):
    prompts = tmp_path / "probe.jsonl"
    prompts.write_text('{"prompt": "say a word"}\n{"prompt": \n')
    recipe = write_recipe(
        tmp_path, diversity={"prompts": str(prompts), "embedding_model": None, "metrics": ["distinct_1"]}
    )
    with pytest.raises(RecipeError, match=rf"recipe.yaml: diversity: Prompts file {prompts}:2: invalid JSON"):
        run_stage(str(recipe), smoke_flags(assets, tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing written: the same command reruns once the file is fixed


@pytest.mark.parametrize(
    ("env", "flags", "launched"),
    [
        ({"ACCELERATE_MIXED_PRECISION": "bf16", "ACCELERATE_USE_DEEPSPEED": "true"}, [], "bf16"),
        ({"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_DEEPSPEED": "true"}, ["--bf16", "true"], "no"),
        ({"ACCELERATE_MIXED_PRECISION": "fp16"}, [], "fp16"),  # DDP: would train in fp16 and record bf16: false
    ],
)
def test_launcher_precision_disagreeing_with_the_recipe(
    assets, tmp_path, monkeypatch, no_model_load, env, flags, launched
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--use_cpu", "true", *flags))
    assert f"asks for mixed_precision {launched!r}. Make them agree" in message
    assert not (tmp_path / "out").exists()


def test_datasets_with_an_empty_split(assets, tmp_path, no_model_load):
    """datasets itself cannot read these back (an IndexError, a ValueError): one line naming the dataset instead."""
    from datasets import DatasetDict, load_dataset

    rows = load_dataset("json", data_files=str(assets / "train.jsonl"))["train"]
    saved = tmp_path / "saved"
    DatasetDict(train=rows, test=rows.select([])).save_to_disk(str(saved))
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(saved)))
    assert message.startswith(f"could not read the saved dataset {saved} (dataset_name): IndexError")
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(assets / "train.jsonl", folder / "train.jsonl")
    (folder / "test.jsonl").write_text("")
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(folder)))
    assert message.startswith(f"could not read the dataset folder {folder} (dataset_name): ")
    assert '"test" corresponds to no data' in message and not (tmp_path / "out").exists()
