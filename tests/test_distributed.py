"""Two CPU processes through `accelerate launch` (gloo): DDP and DeepSpeed ZeRO-2/3 train like one process.

How the processes are launched: tests/launching.py. Uneven last batches, GEM and gradient accumulation on two
processes: tests/test_trainer_shapes.py.
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from divalign.smoke import build_smoke_assets
from launching import REPO, cpu_accelerate_config, launch_train

pytestmark = pytest.mark.slow

SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def smoke_flags(assets: Path, output_dir: Path, batch: int) -> list[str]:
    return [
        "--model_name_or_path", str(assets / "model"),
        "--dataset_name", str(assets / "train.jsonl"),
        "--output_dir", str(output_dir),
        "--per_device_train_batch_size", str(batch),
        "--save_strategy", "no",
    ]  # fmt: skip


def launch(config: Path | None, flags: list[str]) -> None:
    launch_train(SMOKE_RECIPE, config, flags)


def logged_losses(output_dir: Path) -> list[float]:
    # save_strategy "no" leaves no checkpoint; the final trainer state sits in the output dir
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def single_process_losses(assets, tmp_path_factory) -> list[float]:
    out = tmp_path_factory.mktemp("one") / "run"
    launch(None, smoke_flags(assets, out, batch=8))
    return logged_losses(out)


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3"])
def test_two_processes_match_one(assets, tmp_path, single_process_losses, name):
    out = tmp_path / "run"
    launch(cpu_accelerate_config(name, tmp_path), smoke_flags(assets, out, batch=4))
    assert logged_losses(out) == pytest.approx(single_process_losses, rel=1e-4)
    if name == "zero3":
        # zero3_save_16bit_model: the next stage loads a whole model, not DeepSpeed shards
        model = AutoModelForCausalLM.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
        prompt = tokenizer("user : say a word", return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=3, do_sample=False)
        assert generated.shape[1] == prompt["input_ids"].shape[1] + 3
        reference = AutoModelForCausalLM.from_pretrained(assets / "model")
        changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters(), strict=True)]
        assert all(changed), "ZeRO-3 saved weights equal the untrained model"


def test_lora_on_the_head_under_zero3_trains_like_ddp(assets, tmp_path):
    """LoRA on `lm_head` enters the loss head as extra columns whose up-projection is read directly: under ZeRO-3 it
    is gathered like the head weight, and the run logs DDP's losses."""
    losses = {}
    for name in ("ddp", "zero3"):
        out = tmp_path / name
        flags = [*smoke_flags(assets, out, batch=4), "--max_steps", "4", "--logging_steps", "1", "--learning_rate",
                 "0.05", "--use_peft", "true", "--lora_target_modules", "q_proj", "lm_head", "--lora_r", "4"]  # fmt: skip
        launch(cpu_accelerate_config(name, tmp_path), flags)
        losses[name] = logged_losses(out)
    assert len(losses["ddp"]) == 4
    assert losses["zero3"] == pytest.approx(losses["ddp"], rel=1e-5)
