"""DPO on two CPU processes (DDP over gloo) trains like one process with the same global batch.

The sigmoid DPO loss is a mean over preference pairs and DDP averages the ranks' gradients, so two ranks of 2 pairs
take the same optimizer step as one process of 4 pairs; TRL gathers the logged metrics over ranks before averaging.
The logged losses, rewards and margins, and the saved weights must therefore match a one-process run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

import divalign.launch.train as train
from divalign.smoke import WORDS, save_tiny_model, write_jsonl
from launching import accelerate_launch, cpu_accelerate_config

pytestmark = pytest.mark.slow

LOGGED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins")


def preference_rows(count: int) -> list[dict]:
    """Pairs of different lengths, so padding and truncation differ between the ranks' batches."""
    return [
        {
            "prompt": [{"role": "user", "content": f"say a word {WORDS[i % 5]}"}],
            "chosen": [{"role": "assistant", "content": " ".join([WORDS[i % 5]] * (1 + i % 3))}],
            "rejected": [{"role": "assistant", "content": f"{WORDS[(i + 7) % 40]} w39"}],
        }
        for i in range(count)
    ]


def dpo_recipe(directory: Path, model: Path) -> Path:
    content = {
        "trainer": "dpo",
        "model_name_or_path": str(model),
        "dataset_name": str(write_jsonl(directory / "prefs.jsonl", preference_rows(12))),
        "max_length": 32,
        "num_train_epochs": 1,  # 12 pairs, global batch 4: 3 steps
        "learning_rate": 1.0e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
        "use_cpu": True,  # DDP on CPU ranks: the trainer gathers over gloo (--ddp_backend gloo below)
        "seed": 0,
    }
    path = directory / "dpo.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def logged(output_dir: Path) -> list[dict[str, float]]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [{key: entry[key] for key in LOGGED} for entry in history if "loss" in entry]


def test_dpo_on_two_processes_matches_one(tmp_path):
    model = save_tiny_model(tmp_path / "model")
    recipe = dpo_recipe(tmp_path, model)
    one, two = tmp_path / "one", tmp_path / "two"
    train.run_stage(str(recipe), ["--output_dir", str(one), "--per_device_train_batch_size", "4"])
    flags = ["--output_dir", str(two), "--per_device_train_batch_size", "2", "--ddp_backend", "gloo"]
    accelerate_launch(["-m", "divalign.train", str(recipe), *flags], cpu_accelerate_config("ddp", tmp_path))

    single, double = logged(one), logged(two)
    assert len(single) == 3 and len(double) == 3  # 12 pairs at a global batch of 4
    for a, b in zip(single, double, strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    assert single[-1]["rewards/margins"] != pytest.approx(single[0]["rewards/margins"], abs=1e-3)  # it learned
    start = AutoModelForCausalLM.from_pretrained(model).state_dict()
    weights = [AutoModelForCausalLM.from_pretrained(d).state_dict() for d in (one, two)]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    assert any(not torch.equal(weights[0][name], start[name]) for name in start)
