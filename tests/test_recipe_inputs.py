"""What a recipe can feed `divalign.train` besides TRL keys: an `env:` block applied before anything loads, and
datasets saved with `save_to_disk` or written as csv / parquet / jsonl, with a clear error for a missing split."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

import divalign.launch.train as train
from divalign.launch.datasets_io import load_recipe_dataset
from divalign.launch.recipe import RecipeError
from divalign.smoke import save_tiny_model

ROWS = [
    {"prompt": f"user : say a word w{i % 5} </s> assistant :", "completion": f" w{i % 5} w{i % 7} </s>"}
    for i in range(10)
]
EVAL_ROWS = ROWS[:3]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def sft_recipe(directory: Path, model_dir: Path, **changes) -> Path:
    content = {
        "trainer": "sft",
        "model_name_or_path": str(model_dir),
        "dataset_name": "set-by-the-test",
        "output_dir": str(directory / "run"),
        "max_length": 32,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,  # 10 rows: steps of 4, 4 and 2
        "learning_rate": 1.0e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        **changes,
    }
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def write_dataset(directory: Path, kind: str) -> str:
    """The rows as a `kind` dataset; returns what `dataset_name` should say."""
    rows = Dataset.from_list(ROWS)
    if kind == "jsonl":
        path = directory / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "csv":
        path = directory / "data.csv"
        rows.to_csv(path, index=False)
    elif kind == "parquet":
        path = directory / "data.parquet"
        rows.to_parquet(path)
    elif kind == "saved Dataset":
        path = directory / "saved_dataset"
        rows.save_to_disk(path)
    else:  # a saved DatasetDict with named splits
        path = directory / "saved_dict"
        DatasetDict(train_sft=rows, test_sft=Dataset.from_list(EVAL_ROWS)).save_to_disk(path)
    return str(path)


class Args:
    dataset_config = None
    dataset_streaming = False

    def __init__(self, name: str, split: str = "train"):
        self.dataset_name, self.dataset_train_split = name, split


FORMATS = ["jsonl", "csv", "parquet", "saved Dataset", "saved DatasetDict"]


@pytest.mark.parametrize("kind", FORMATS)
def test_every_dataset_format_loads_the_same_rows(tmp_path, kind):
    split = "train_sft" if kind == "saved DatasetDict" else "train"
    dataset = load_recipe_dataset(Args(write_dataset(tmp_path, kind), split))
    assert dataset[split].to_list() == ROWS


@pytest.mark.parametrize("kind", ["csv", "parquet", "saved DatasetDict"])
def test_sft_trains_on_every_row_of_the_dataset(tmp_path, model_dir, kind):
    """One epoch over 10 rows at batch 4 is 3 optimizer steps; the saved dict's named splits train and evaluate."""
    splits = {"dataset_train_split": "train_sft", "dataset_test_split": "test_sft", "eval_strategy": "epoch"}
    recipe = sft_recipe(tmp_path, model_dir, **(splits if kind == "saved DatasetDict" else {}))
    out = Path(train.run_stage(str(recipe), ["--dataset_name", write_dataset(tmp_path, kind)]))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]
    if kind == "saved DatasetDict":
        assert [e["step"] for e in state["log_history"] if "eval_loss" in e] == [3]


@pytest.mark.parametrize("kind", ["jsonl", "saved DatasetDict"])
def test_missing_split_names_the_split_and_the_ones_there(tmp_path, model_dir, kind):
    recipe = sft_recipe(tmp_path, model_dir, dataset_train_split="train_prefs")
    name = write_dataset(tmp_path, kind)
    there = "['train_sft', 'test_sft']" if kind == "saved DatasetDict" else "['train']"
    message = f"dataset '{name}' has no split 'train_prefs' (dataset_train_split); it has {there}"
    with pytest.raises(RecipeError, match=re.escape(message)):
        train.run_stage(str(recipe), ["--dataset_name", name])
    assert not (tmp_path / "run" / "divalign_recipe.yaml").exists()  # refused before the trainer was built


def test_env_block_is_set_before_the_trainer_and_model_are_built(tmp_path, model_dir, monkeypatch):
    for key in ("DIVALIGN_TEST_SETTING", "DIVALIGN_TEST_NUMBER"):
        monkeypatch.delenv(key, raising=False)
    seen: dict[str, str | None] = {}
    stage = train.STAGES["sft"]

    def build(run, _build=stage.build):
        seen.update({k: os.environ.get(k) for k in ("DIVALIGN_TEST_SETTING", "DIVALIGN_TEST_NUMBER")})
        return _build(run)

    monkeypatch.setitem(train.STAGES, "sft", dataclasses.replace(stage, build=build))
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the block changes the process environment: undo it
    recipe = sft_recipe(tmp_path, model_dir, env={"DIVALIGN_TEST_SETTING": "on", "DIVALIGN_TEST_NUMBER": 3})
    train.run_stage(str(recipe), ["--dataset_name", write_dataset(tmp_path, "jsonl"), "--max_steps", "1"])
    assert seen == {"DIVALIGN_TEST_SETTING": "on", "DIVALIGN_TEST_NUMBER": "3"}  # values become strings


def test_env_block_must_be_a_mapping(tmp_path, model_dir):
    recipe = sft_recipe(tmp_path, model_dir, env=["WANDB_MODE=offline"])
    with pytest.raises(RecipeError, match="`env:` must be a mapping of environment variables"):
        train.run_stage(str(recipe), ["--dataset_name", write_dataset(tmp_path, "jsonl")])


def test_env_numbers_are_set_as_written_not_as_yaml_1_1_reads_them(tmp_path):
    """PyYAML reads `010` as octal 8, `1:30` as 90 and `1_000` as 1000; the variables get the recipe's text."""
    from divalign.launch.recipe import split_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("trainer: sft\nenv:\n  A: 010\n  B: 1:30\n  C: 1_000\n  D: 3\n  E: 1.50\n  F: '010'\n")
    assert yaml.safe_load(recipe.read_text())["env"]["A"] == 8  # what the file would give without the fix
    _, _, env = split_recipe(recipe, ["sft"])
    assert env == {"A": "010", "B": "1:30", "C": "1_000", "D": "3", "E": "1.50", "F": "010"}


@pytest.mark.parametrize(
    ("written", "named"), [("''", "key '' is an empty name"), ("A=B", "key 'A=B' is a name holding '='")]
)
def test_env_key_that_is_empty_or_holds_equals_is_refused_naming_it(tmp_path, written, named):
    from divalign.launch.recipe import split_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"trainer: sft\nenv:\n  {written}: x\n")
    with pytest.raises(RecipeError, match=re.escape(f"{recipe}: `env:` {named}")):
        split_recipe(recipe, ["sft"])
