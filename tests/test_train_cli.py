"""`python -m divalign.train RECIPE`: recipes parse, bad input fails before training, runs save and resume."""

import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM
from trl import ModelConfig, ScriptArguments

from divalign.callback import DiversityConfig
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
        # argparse words the refusal; the error must name the flag and the value (not argparse's wording)
        ({}, ["--lr_scheduler_type", "wavy"], r"--lr_scheduler_type\b.*\bwavy\b"),
        ({"stop_on_nonfinite": "sometimes"}, [], r"'stop_on_nonfinite' in .*recipe.yaml must be true or false"),
        ({"diversity": [1, 2]}, [], "`diversity:` must be a mapping"),
        # numbers TRL and transformers take without a word
        ({"max_steps": 0}, [], r"^`max_steps` must be -1 \(train for num_train_epochs\) or a step count >= 1, got 0 "
         r"\(recipe key in .*recipe.yaml\)$"),
        ({}, ["--max_steps", "-5"], r"^`max_steps` must be -1 .* got -5 \(flag --max_steps\)$"),
        ({"max_length": -3}, [], r"^`max_length` must be a token count >= 1 \(or null: no limit\), got -3"),
        ({}, ["--max_length=0"], r"^`max_length` must be a token count >= 1 .*got 0 \(flag --max_length\)$"),
        ({"max_steps": -1, "num_train_epochs": 0}, [], r"^`num_train_epochs` must be > 0 when max_steps is -1"),
        ({"num_train_epochs": -2.0}, ["--max_steps", "-1"], r"^`num_train_epochs` must be > 0 when max_steps is -1"),
        ({"per_device_train_batch_size": 0}, [], r"^`per_device_train_batch_size` must be a whole number >= 1, got 0"),
        ({"gradient_accumulation_steps": -1}, [], r"^`gradient_accumulation_steps` must be a whole number >= 1"),
        ({"save_steps": 0}, [], r"^`save_steps` must be > 0, got 0"),
        ({"learning_rate": -1.0e-3}, [], r"^`learning_rate` must be >= 0, got -0.001"),
        ({"seed": -1}, [], r"^`seed` must be a whole number in 0 .. 2\*\*32 - 1"),
        # env: values that have no one spelling as an environment variable
        ({"env": {"WANDB_MODE": None}}, [], r"recipe.yaml: `env: WANDB_MODE` must be a string or a number, got None \(null\)$"),
        ({"env": {"IDS": [1, 2]}}, [], r"`env: IDS` must be a string or a number, got \[1, 2\] \(a list\)$"),
        ({"env": {"OPTS": {"a": 1}}}, [], r"`env: OPTS` must be a string or a number, got \{'a': 1\} \(a mapping\)$"),
        ({"env": {"WANDB_SILENT": True}}, [], r"`env: WANDB_SILENT` must be a string or a number, got True \(a boolean\) "
         r"\(quote it: WANDB_SILENT: 'true'\)$"),
    ],
)  # fmt: skip
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
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "runs" / "out", "--max_length", "4"))
    assert "no trainable tokens" in message and "max_length=4" in message
    assert not (tmp_path / "runs").exists()  # the trainer was built (and the lock taken) in folders it created: gone
    flags = smoke_flags(assets, tmp_path / "runs" / "out", "--max_length", "4", "--max_steps", "2")
    # the cause fixed, the same command otherwise, nothing removed by hand
    flags[flags.index("--max_length") + 1] = "64"
    assert main([str(SMOKE_RECIPE), *flags]) == 0


def test_a_failure_while_building_the_trainer_leaves_no_empty_output_dir(assets, tmp_path, monkeypatch):
    def build(run):
        raise RuntimeError("the trainer could not be built")

    monkeypatch.setitem(STAGES, "tofu", dataclasses.replace(STAGES["tofu"], build=build))
    with pytest.raises(RuntimeError, match="could not be built"):
        run_stage(str(SMOKE_RECIPE), smoke_flags(assets, tmp_path / "runs" / "a" / "out"))
    assert list(tmp_path.iterdir()) == []  # `runs/a/out`, all three created by the run, are gone
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(RuntimeError, match="could not be built"):
        run_stage(str(SMOKE_RECIPE), smoke_flags(assets, mine))
    assert mine.is_dir() and list(mine.iterdir()) == []  # a folder the user made is left as it was


def test_output_dir_checks(assets, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "model.safetensors").write_text("precious")
    assert "is not empty" in run_error(SMOKE_RECIPE, smoke_flags(assets, full))
    assert (full / "model.safetensors").read_text() == "precious"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, blocker / "out"))
    assert message == f"output_dir {blocker / 'out'} lies under {blocker}, which is a file, not a directory"
    flags = smoke_flags(assets, tmp_path / "fresh", "--resume_from_checkpoint", "true")
    assert "holds no complete checkpoint" in run_error(SMOKE_RECIPE, flags)
    assert not (tmp_path / "fresh").exists()  # created for the lock, removed again: nothing to remove by hand
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
    """datasets itself cannot read these back (an IndexError, a ValueError): one line naming the dataset instead,
    ending in datasets' own reason (taken from datasets here, not spelled out: its wording is not divalign's)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    rows = load_dataset("json", data_files=str(assets / "train.jsonl"))["train"]
    saved = tmp_path / "saved"
    DatasetDict(train=rows, test=rows.select([])).save_to_disk(str(saved))
    with pytest.raises(Exception) as unreadable:  # the control: datasets alone fails on it
        load_from_disk(str(saved))
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(saved)))
    assert message == f"could not read the saved dataset {saved} (dataset_name): {unreadable.value!r}"
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(assets / "train.jsonl", folder / "train.jsonl")
    (folder / "test.jsonl").write_text("")
    with pytest.raises(Exception) as unreadable:
        load_dataset(str(folder))
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(folder)))
    assert message == f"could not read the dataset folder {folder} (dataset_name): {unreadable.value}"
    assert not (tmp_path / "out").exists()


def test_output_dir_naming_a_file_is_refused_in_the_run_and_the_dry_run(assets, tmp_path, no_model_load, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("the user's file")
    expected = f"output_dir {existing} is a file, not a directory; give output_dir a directory path"
    assert run_error(SMOKE_RECIPE, smoke_flags(assets, existing)) == expected
    assert main([str(SMOKE_RECIPE), *smoke_flags(assets, existing), "--dry-run"]) == 1
    assert capsys.readouterr().err.strip() == f"divalign.train: error: {expected}"
    assert existing.read_text() == "the user's file"


# Dataset rows of mixed kinds: named by file, line (or row) and field before the model loads

ROW = {"prompt": [{"role": "user", "content": "say a word"}], "completion": [{"role": "assistant", "content": "w1"}]}
TEXT_ROW = {"prompt": "user : say a word </s> assistant :", "completion": " w1 </s>"}


@pytest.mark.parametrize(
    ("rows", "where", "problem"),
    [
        ([{"prompt": 3, "completion": ["x"]}], "line 1", "field 'prompt': a number (3); expected chat messages or text"),
        ([TEXT_ROW, TEXT_ROW, {"prompt": 3, "completion": ["x"]}], "line 3", "field 'prompt': a number (3)"),
        ([TEXT_ROW, {"prompt": "q", "completion": ["x"]}], "line 2", "field 'completion': a list of str (['x'])"),
        ([ROW, ROW, TEXT_ROW], "line 3", "field 'prompt': text, but the first row's holds chat messages; every row "
         "must hold the same kind"),
        ([TEXT_ROW, {**TEXT_ROW, "completion": ROW["completion"]}], "line 2", "field 'completion': chat messages, but "
         "its 'prompt' holds text; a row's fields are all text or all chat"),
        ([TEXT_ROW, {**TEXT_ROW, "prompt": None}], "line 2", "field 'prompt': null; expected"),
        ([{"messages": ROW["prompt"] + ROW["completion"]}, {"messages": "user : hi"}], "line 2", "field 'messages': "
         "text; expected chat messages (a list of {'role': ..., 'content': ...} messages)"),
        ([{"messages": []}], "line 1", "field 'messages': an empty list; expected"),
        # messages a chat template would render as empty turns, or not at all
        ([{"messages": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "w1"}]}], "line 1",
         "field 'messages': message 0 (user) has no 'content' (it holds 'text': the text goes in 'content')"),
        ([{"messages": ROW["prompt"] + ROW["completion"]}, {"messages": [*ROW["prompt"], {"role": "bot", "content": "w"}]}],
         "line 2", "field 'messages': message 1 has role 'bot'; expected one of system, user, assistant, tool"),
        ([ROW, {**ROW, "completion": [{"role": "assistant", "value": "w1"}]}], "line 2", "field 'completion': "
         "message 0 (assistant) has no 'content' (it holds 'value'"),
    ],
)  # fmt: skip
def test_rows_of_mixed_kinds_name_file_line_and_field(assets, tmp_path, no_model_load, rows, where, problem):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(data)))
    assert message.startswith(f"dataset file {data}, {where}, {problem}"), message
    assert "\n" not in message and not (tmp_path / "out").exists()


def test_mixed_rows_in_other_formats_are_named_by_row(assets, tmp_path, no_model_load):
    from datasets import Dataset, DatasetDict

    blank_lines = tmp_path / "blank.jsonl"
    blank_lines.write_text(f"{json.dumps(TEXT_ROW)}\n\n\n{json.dumps({**TEXT_ROW, 'prompt': None})}\n")
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(blank_lines)))
    assert message.startswith(f"dataset file {blank_lines}, line 4, field 'prompt': null")  # the line, not the row
    parquet = tmp_path / "data.parquet"
    Dataset.from_list([TEXT_ROW, {**TEXT_ROW, "completion": None}]).to_parquet(parquet)
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(parquet)))
    assert message.startswith(f"dataset file {parquet}, row 2, field 'completion': null")
    saved = tmp_path / "saved"
    DatasetDict(train=Dataset.from_list([{"prompt": 1, "completion": 2}])).save_to_disk(saved)
    message = run_error(SMOKE_RECIPE, smoke_flags(assets, tmp_path / "out", "--dataset_name", str(saved)))
    assert message.startswith(f"dataset '{saved}', split 'train', row 1, field 'prompt': a number (1)")
    assert not (tmp_path / "out").exists()


def test_a_text_prompt_beside_chat_answers_says_what_to_do():
    """HuggingFaceH4/ultrafeedback_binarized's shape: a text `prompt` beside `chosen`/`rejected` conversations."""
    from datasets import Dataset

    from divalign.launch.datasets_io import check_text_fields

    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    rows = Dataset.from_list([{"prompt": "q", "chosen": chat, "rejected": chat}])
    message = r"^dataset 'prefs', split 'train', row 1, field 'chosen': chat messages, but its 'prompt' holds text; "
    with pytest.raises(RecipeError, match=message + r".*\(preference data: drop the `prompt` column when the conv"):
        check_text_fields(rows, ("prompt", "chosen", "rejected"), None, "prefs", "train")
    check_text_fields(rows.remove_columns("prompt"), ("chosen", "rejected"), None, "prefs", "train")


# Flags spelled with dashes, as TRL's parser takes them


def test_dashed_flags_are_the_underscored_keys(assets, tmp_path):
    out = tmp_path / "run"
    flags = ["--model-name-or-path", str(assets / "model"), "--dataset-name", str(assets / "train.jsonl"),
             "--output-dir", str(out), "--max-steps", "2", "--learning-rate=1e-3", "--stop-on-nonfinite", "false"]  # fmt: skip
    assert main([str(SMOKE_RECIPE), *flags]) == 0
    resolved = yaml.safe_load((out / "divalign_recipe.yaml").read_text())
    assert (resolved["max_steps"], resolved["learning_rate"], resolved["stop_on_nonfinite"]) == (2, 1e-3, False)
    assert json.loads((out / "divalign_finished.json").read_text())["global_step"] == 2
    with pytest.raises(RecipeError, match=r"^`max_steps` must be -1 .*got 0 \(flag --max_steps\)$"):
        run_stage(str(SMOKE_RECIPE), ["--max-steps", "0"])
    with pytest.raises(RecipeError, match="unknown flag key 'max_stepz'"):
        run_stage(str(SMOKE_RECIPE), ["--max-stepz", "2"])


# The diversity block's quality: a missing reward model before the model loads; a module of the current directory


def test_a_missing_reward_model_quality_fails_the_dry_run_and_the_run_before_the_model_loads(
    assets, tmp_path, no_model_load, capsys
):
    """`quality: reward_model:/nonexistent` used to pass the dry run and fail after the policy loaded and sampled step
    0 (an OSError about a repo id)."""
    prompts = write_jsonl(tmp_path / "probe.jsonl", [{"prompt": "say a word"}])
    missing = tmp_path / "no_such_rm"
    block = {"prompts": str(prompts), "embedding_model": None, "metrics": ["distinct_1"]}
    recipe = write_recipe(tmp_path, diversity={**block, "quality": f"reward_model:{missing}"})
    expected = f"diversity.quality: reward model {missing} does not exist (a local path, not a Hub id)"
    assert main([str(recipe), *smoke_flags(assets, tmp_path / "out"), "--dry-run"]) == 1
    assert expected in capsys.readouterr().err
    with pytest.raises(RecipeError, match=re.escape(expected)):
        run_stage(str(recipe), smoke_flags(assets, tmp_path / "out"))
    # a Hub id the offline Hub cannot give: refused by the run before the policy loads
    recipe = write_recipe(tmp_path, diversity={**block, "quality": "reward_model:divalign-tests/no-such-rm"})
    expected = (
        "diversity.quality divalign-tests/no-such-rm is neither a local directory nor a Hub model in the local cache"
    )
    with pytest.raises(RecipeError, match=re.escape(expected)):
        run_stage(str(recipe), smoke_flags(assets, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_quality_function_in_the_current_directory_passes_the_dry_run(assets, tmp_path, monkeypatch, capsys):
    """`quality: MODULE:FUNCTION`, the grammar of `divalign eval --quality`, with MODULE a file where the run starts;
    a module with a syntax error is refused naming its file and line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "recipe_quality_ok.py").write_text("def score(completion, answer):\n    return len(completion)\n")
    (tmp_path / "recipe_quality_bad.py").write_text("def score(completion, answer)\n    return 1\n")
    prompts = write_jsonl(tmp_path / "probe.jsonl", [{"prompt": "say a word"}])
    block = {"prompts": str(prompts), "embedding_model": None, "metrics": ["distinct_1"]}
    recipe = write_recipe(tmp_path, diversity={**block, "quality": "recipe_quality_ok:score"})
    assert main([str(recipe), *smoke_flags(assets, tmp_path / "out"), "--dry-run"]) == 0
    recipe = write_recipe(tmp_path, diversity={**block, "quality": "recipe_quality_bad:score"})
    assert main([str(recipe), *smoke_flags(assets, tmp_path / "out"), "--dry-run"]) == 1
    error = capsys.readouterr().err
    assert "diversity.quality 'recipe_quality_bad:score': module 'recipe_quality_bad' has a syntax error at " in error
    assert f"{tmp_path / 'recipe_quality_bad.py'}:1" in error and "Traceback" not in error


def test_the_dry_run_on_a_machine_without_a_gpu_says_a_bf16_recipe_needs_one(assets, tmp_path, monkeypatch, capsys):
    """Without a GPU the values are checked as a CPU run; a recipe that trains in bf16 (TRL's default when `bf16` is
    not set) would stop here before its model loads, and the dry run says so."""
    import divalign.launch.checks as checks

    monkeypatch.setattr(checks, "has_gpu", lambda: False)
    content = yaml.safe_load(SMOKE_RECIPE.read_text())
    del content["bf16"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(content))
    note = (
        "divalign train: note: this machine has no GPU, so the recipe's values were checked as a CPU run (use_cpu: "
        "true). It trains in bf16 (`bf16: true`, TRL's default when the recipe does not set it), which needs a GPU"
    )
    assert main([str(recipe), *smoke_flags(assets, tmp_path / "out"), "--dry-run"]) == 0
    assert note in capsys.readouterr().err
    for settled in (["--bf16", "false"], ["--use_cpu", "true"]):  # full precision, or bf16 on the CPU on purpose
        assert main([str(recipe), *smoke_flags(assets, tmp_path / "out", *settled), "--dry-run"]) == 0
        assert "divalign train: note:" not in capsys.readouterr().err
