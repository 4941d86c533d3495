"""GRPO's `diversity/rollout/*` logs, end to end through `divalign.train`: the logged values are those of each step's
rollout groups recomputed by hand from the completions TRL scored, and `log_rollout_diversity: false` logs none and
gathers nothing."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

import divalign.launch.train as train
import divalign.trainers.grpo_trainer as grpo_trainer
from divalign.smoke import WORDS, build_tokenizer, save_tiny_model, write_jsonl

GROUP = 4  # num_generations; one prompt per step: per_device_train_batch_size 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def grpo_recipe(directory: Path, model_dir: Path, **changes) -> Path:
    rows = [{"prompt": [{"role": "user", "content": f"say a word {WORDS[i]}"}], "answer": WORDS[i]} for i in range(4)]
    content = {
        "trainer": "grpo",
        "model_name_or_path": str(model_dir),
        "dataset_name": str(write_jsonl(directory / "prompts.jsonl", rows)),
        "output_dir": str(directory / "grpo"),
        "max_steps": 2,
        "num_generations": GROUP,
        "per_device_train_batch_size": GROUP,
        "max_completion_length": 4,
        "beta": 0.0,
        "rewards": [{"length_penalty": {"target_tokens": 2}}],
        "rollout_diversity_metrics": ["distinct_1", "exact_dup_rate"],
        "learning_rate": 1.0e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "seed": 0,
        **changes,
    }
    path = directory / "grpo.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def distinct_1(group: list[list[int]]) -> float:
    tokens = [t for ids in group for t in ids]
    return len(set(tokens)) / len(tokens) if tokens else math.nan


def duplicate_rate(texts: list[str]) -> float:
    counts = Counter(texts)
    return sum(counts[t] > 1 for t in texts) / len(texts)


def logged(output_dir: Path) -> list[dict]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "reward" in entry]


def test_logged_rollout_diversity_is_that_of_each_steps_group(tmp_path, model_dir, monkeypatch):
    """Each completion as the probe-set callback scores one: its ids up to the first EOS or pad (TRL's ids keep the
    EOS), its text decoded from them."""
    tokenizer = build_tokenizer()
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    rollouts: list[tuple[list[str], list[list[int]]]] = []
    original = grpo_trainer.DivGRPOTrainer._log_rollout_diversity

    def recording(self, prompts, completion_ids):
        cut = []
        for ids in completion_ids:
            ids = [int(t) for t in ids]
            stop = next((i for i, t in enumerate(ids) if t in ends), len(ids))
            cut.append(ids[:stop])
        rollouts.append(([tokenizer.decode(ids, skip_special_tokens=True) for ids in cut], cut))
        return original(self, prompts, completion_ids)

    monkeypatch.setattr(grpo_trainer.DivGRPOTrainer, "_log_rollout_diversity", recording)
    out = Path(train.run_stage(str(grpo_recipe(tmp_path, model_dir))))
    steps = logged(out)
    assert len(steps) == 2 and len(rollouts) == 2  # one generation batch (one prompt's group) per step
    for entry, (texts, ids) in zip(steps, rollouts, strict=True):
        assert len(ids) == GROUP
        assert entry["diversity/rollout/distinct_1"] == pytest.approx(distinct_1(ids), nan_ok=True)
        assert entry["diversity/rollout/exact_dup_rate"] == pytest.approx(duplicate_rate(texts))


def test_log_rollout_diversity_false_logs_and_gathers_nothing(tmp_path, model_dir, monkeypatch):
    gathers = []
    real_gather = grpo_trainer.gather_rows
    monkeypatch.setattr(grpo_trainer, "gather_rows", lambda rows: gathers.append(rows) or real_gather(rows))
    out = Path(train.run_stage(str(grpo_recipe(tmp_path, model_dir, log_rollout_diversity=False))))
    steps = logged(out)
    assert len(steps) == 2 and "rewards/length_penalty/mean" in steps[0]  # GRPO trained and logged its rewards
    assert not any(key.startswith("diversity/rollout/") for entry in steps for key in entry)
    assert gathers == []
