"""What a stage saves is what it trained: the saved model differs from the starting one and, reloaded with
`from_pretrained`, gives the trained model's logits on fixed inputs (SFT with TOFU, and DPO)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

import divalign.launch.train as train
from divalign.smoke import WORDS, build_smoke_assets, write_jsonl

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
PROBES = ["user : say a word w1 </s> assistant :", "user : say a word w3 </s> assistant : w3 w7"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


@pytest.fixture
def trainers(monkeypatch) -> list:
    """The trainer each stage builds, kept to read its in-memory model after training."""
    built: list = []
    for name, stage in list(train.STAGES.items()):

        def build(run, _build=stage.build):
            built.append(_build(run))
            return built[-1]

        monkeypatch.setitem(train.STAGES, name, dataclasses.replace(stage, build=build))
    return built


@torch.no_grad()
def logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(PROBES, return_tensors="pt", padding=True)
    return model.eval()(**batch).logits.float()


def check_saved(trainer, start_dir: Path, output_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    trained = logits(trainer.accelerator.unwrap_model(trainer.model), tokenizer)
    saved = logits(AutoModelForCausalLM.from_pretrained(output_dir), tokenizer)
    start = logits(AutoModelForCausalLM.from_pretrained(start_dir), tokenizer)
    torch.testing.assert_close(saved, trained, rtol=0, atol=1e-6)
    assert (saved - start).abs().max() > 1e-3  # training moved the outputs, and the save kept the move


def test_sft_saves_the_trained_model(assets, tmp_path, trainers):
    out = tmp_path / "run"
    flags = ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "train.jsonl")]
    train.run_stage(str(SMOKE_RECIPE), [*flags, "--output_dir", str(out), "--save_strategy", "no"])
    (trainer,) = trainers
    check_saved(trainer, assets / "model", out)


def test_dpo_saves_the_trained_model(assets, tmp_path, trainers):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"say a word {WORDS[i % 5]}"}],
            "chosen": [{"role": "assistant", "content": f"{WORDS[i % 5]} {WORDS[i % 5]}"}],
            "rejected": [{"role": "assistant", "content": f"{WORDS[(i + 7) % 40]} w39"}],
        }
        for i in range(8)
    ]
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "trainer": "dpo",
                "model_name_or_path": str(assets / "model"),
                "dataset_name": str(write_jsonl(tmp_path / "prefs.jsonl", rows)),
                "output_dir": str(tmp_path / "dpo"),
                "max_steps": 2,
                "max_length": 32,
                "learning_rate": 1.0e-3,
                "per_device_train_batch_size": 4,
                "use_cpu": True,
                "bf16": False,
                "gradient_checkpointing": False,
                "report_to": "none",
                "save_strategy": "no",
            }
        )
    )
    train.run_stage(str(recipe))
    (trainer,) = trainers
    check_saved(trainer, assets / "model", tmp_path / "dpo")
