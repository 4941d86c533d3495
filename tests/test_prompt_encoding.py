"""A prompts file that is not UTF-8 is named with its line, wherever it is read: `diversity.prompts` of a recipe (the
run and the dry run, before the model loads) and `divalign eval --prompts`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

import divalign.launch.train as train
from chat_checkpoints import SPECIALS, save_chat_checkpoint
from divalign.cli import main as cli_main
from divalign.launch.recipe import RecipeError
from divalign.prompts import load_prompts
from divalign.smoke import build_smoke_assets

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
# Latin-1 'é' (0xe9) in the second prompt: the file is valid Latin-1, not UTF-8
LATIN1 = {
    ".txt": (b"say a word\nsay caf\xe9 word\n", 2, 8),
    ".jsonl": (b'{"prompt": "say a word"}\n{"prompt": "caf\xe9"}\n', 2, 16),
    ".csv": (b"prompt\nsay a word\ncaf\xe9\n", 3, 4),
}


def latin1_file(directory: Path, suffix: str) -> tuple[Path, int, int]:
    data, line, column = LATIN1[suffix]
    path = directory / f"prompts{suffix}"
    path.write_bytes(data)
    return path, line, column


@pytest.mark.parametrize("suffix", list(LATIN1))
def test_the_loader_names_file_line_and_byte(tmp_path, suffix):
    path, line, column = latin1_file(tmp_path, suffix)
    expected = f"Prompts file {path}:{line}: not UTF-8 text (byte 0xe9 at column {column}); save it as UTF-8"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        load_prompts(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def test_a_recipe_s_diversity_prompts_in_the_run_and_the_dry_run(assets, tmp_path, monkeypatch, capsys):
    def build(run):
        raise AssertionError("the model was loaded before the bad prompts file was reported")

    for name, stage in list(train.STAGES.items()):
        monkeypatch.setitem(train.STAGES, name, dataclasses.replace(stage, build=build))
    prompts, line, _ = latin1_file(tmp_path, ".txt")
    content = yaml.safe_load(SMOKE_RECIPE.read_text())
    content.update(
        model_name_or_path=str(assets / "model"),
        dataset_name=str(assets / "train.jsonl"),
        output_dir=str(tmp_path / "out"),
        diversity={"prompts": str(prompts), "embedding_model": None, "metrics": ["distinct_1"]},
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(content))
    named = f"diversity: Prompts file {prompts}:{line}: not UTF-8 text"
    with pytest.raises(RecipeError, match=re.escape(named)):
        train.run_stage(str(recipe))
    assert train.main([str(recipe), "--dry-run"]) == 1
    assert named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_divalign_eval_names_file_and_line(tmp_path, capsys):
    model = save_chat_checkpoint(tmp_path / "model", [*SPECIALS, "user", "assistant", ":", "say", "a", "word"], seed=0)
    prompts, line, _ = latin1_file(tmp_path, ".jsonl")
    argv = ["eval", "--model", f"base={model}", "--prompts", str(prompts), "--out", str(tmp_path / "eval")]
    assert cli_main(argv) == 2
    assert f"divalign eval: error: Prompts file {prompts}:{line}: not UTF-8 text" in capsys.readouterr().err
