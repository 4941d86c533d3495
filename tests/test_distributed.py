"""Two CPU processes through `accelerate launch` (gloo): DDP and DeepSpeed ZeRO-2/3 train like one process.

The accelerate configs are the shipped ones, changed only where a CPU needs it: two processes, no mixed precision,
and for DDP the GPU launcher with the gloo backend (`use_cpu: true` would run a single process, and for DeepSpeed it
silently disables DeepSpeed — REFERENCE §4). The trainer's own `use_cpu` is on for DDP and off for DeepSpeed.
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from divalign.smoke import build_smoke_assets
from launching import accelerate_launch, cpu_accelerate_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
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
    script = ["-m", "divalign.train", str(SMOKE_RECIPE), *flags]
    if config is None:
        accelerate_launch(script, launch_args=["--num_processes", "1", "--cpu"])
        return
    # DDP needs the trainer on CPU to gather its metrics and token counts over gloo; DeepSpeed needs it off,
    # or it is silently disabled
    use_cpu = "false" if "zero" in config.name else "true"
    accelerate_launch([*script, "--ddp_backend", "gloo", "--use_cpu", use_cpu], config)


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
