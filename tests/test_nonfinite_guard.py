"""A NaN/inf loss or gradient norm stops the run at that step, before it is saved, in every stage, single process and
on two processes (DDP and DeepSpeed ZeRO-2, gloo on CPU); no final model with non-finite weights is ever written.

The non-finite step is forced by tests/scripts/nonfinite_train.py (a NaN multiplied into the loss, or an inf into the
LM head's gradient, at optimizer step k), except in the huge-learning-rate run, where it comes by itself.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from divalign.launch import train
from divalign.launch.nonfinite_guard import NonFiniteError
from divalign.smoke import build_smoke_assets

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from nonfinite_train import poisoned

from test_pipeline import preference_and_prompt_recipes

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "nonfinite_train.py"
SMOKE = REPO / "recipes" / "smoke"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def stage_recipe(name: str, assets: Path, directory: Path) -> Path:
    """A 4-step recipe (checkpoint every 2 steps) of trainer ``name`` on the tiny smoke model."""
    if name in ("dpo", "grpo"):
        return dict(zip(("dpo", "grpo"), preference_and_prompt_recipes(directory), strict=True))[name]
    content = yaml.safe_load((SMOKE / ("sft_smoke.yaml" if name == "sft" else "tofu_smoke.yaml")).read_text())
    if name == "gem":
        content = {k: v for k, v in content.items() if not k.startswith("tofu_")} | {"trainer": "gem", "gem_beta": 0.7}
    content |= {"dataset_name": str(assets / "train.jsonl"), "max_steps": 4, "save_steps": 2}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def flags(assets: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(assets / "model"), "--output_dir", str(output_dir), *extra]


def run_poisoned(monkeypatch, recipe: Path, argv: list[str], step: int, kind: str) -> None:
    for name, stage in list(train.STAGES.items()):
        monkeypatch.setitem(train.STAGES, name, dataclasses.replace(stage, build=poisoned(stage.build, step, kind)))
    train.run_stage(str(recipe), argv)


def checkpoint_steps(output_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*"))


def assert_stopped_before_saving(output_dir: Path, last_good: int) -> None:
    """The newest checkpoint is the last good one, its weights finite; no final model, no finished marker."""
    assert checkpoint_steps(output_dir)[-1] == last_good
    weights = load_file(output_dir / f"checkpoint-{last_good}" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "divalign_finished.json").exists()


@pytest.mark.parametrize("name", ["sft", "tofu", "gem", "dpo", "grpo"])
def test_nan_loss_stops_every_stage_at_that_step(monkeypatch, assets, tmp_path, name):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"optimizer step 3 is not finite \(process 0: loss = nan") as caught:
        run_poisoned(monkeypatch, stage_recipe(name, assets, tmp_path), flags(assets, out), step=3, kind="loss")
    assert f"the newest checkpoint is {out / 'checkpoint-2'}" in str(caught.value)
    assert "stop_on_nonfinite: false" in str(caught.value) and "learning_rate" in str(caught.value)
    assert_stopped_before_saving(out, last_good=2)


def test_infinite_gradient_with_a_finite_loss_stops_too(monkeypatch, assets, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"optimizer step 3 .*loss = [0-9.]+, gradient norm = inf"):
        run_poisoned(monkeypatch, stage_recipe("tofu", assets, tmp_path), flags(assets, out), step=3, kind="grad")
    assert_stopped_before_saving(out, last_good=2)


def test_a_huge_learning_rate_stops_where_it_diverges(assets, tmp_path):
    """No hook: with learning rate 1e30 and no clipping the first update leaves weights near 1e30, whose products
    overflow float32 (max 3.4e38) in the next forward."""
    out = tmp_path / "run"
    argv = flags(assets, out, "--learning_rate", "1e30", "--max_grad_norm", "0", "--save_steps", "1")
    with pytest.raises(NonFiniteError, match=r"optimizer step (\d+) is not finite") as caught:
        train.run_stage(str(stage_recipe("tofu", assets, tmp_path)), argv)
    step = int(re.search(r"optimizer step (\d+)", str(caught.value)).group(1))
    assert_stopped_before_saving(out, last_good=step - 1)
    history = json.loads((out / f"checkpoint-{step - 1}" / "trainer_state.json").read_text())
    assert history["global_step"] == step - 1


def test_guard_off_trains_on_but_never_saves_a_nan_model(monkeypatch, assets, tmp_path):
    out = tmp_path / "run"
    recipe = stage_recipe("tofu", assets, tmp_path)
    recipe.write_text(recipe.read_text() + "stop_on_nonfinite: false\n")
    with pytest.raises(NonFiniteError, match=r"the trained model has non-finite weights \(.*\); it was not saved"):
        run_poisoned(monkeypatch, recipe, flags(assets, out), step=3, kind="loss")
    assert checkpoint_steps(out) == [2, 4]  # it trained on through step 3 ...
    assert not (out / "model.safetensors").exists()  # ... but the NaN model is not the output
    assert yaml.safe_load((out / "divalign_recipe.yaml").read_text())["stop_on_nonfinite"] is False


# Two processes: every rank stops at the same step, whichever rank saw the NaN


def accelerate_config(name: str, directory: Path) -> Path:
    config = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no", use_cpu=False)
    path = directory / f"{name}_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("config", "rank"), [("ddp", "1"), ("zero2", "0"), ("zero3", "1")])
def test_two_processes_stop_together(assets, tmp_path, config, rank):
    out = tmp_path / "run"
    use_cpu = "true" if config == "ddp" else "false"  # DeepSpeed is disabled by use_cpu (see test_distributed)
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config(config, tmp_path)),
    ]
    run_flags = flags(assets, out, "--per_device_train_batch_size", "4", "--ddp_backend", "gloo", "--use_cpu", use_cpu)
    command = [*launcher, str(SCRIPT), "3", "loss", rank, str(stage_recipe("tofu", assets, tmp_path)), *run_flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    # the two ranks write to one stderr: a line may begin with what the other rank wrote before its newline
    errors = [line for line in result.stderr.splitlines() if "divalign.train: error: optimizer step 3" in line]
    # each rank raises at step 3; torchrun ends the other one as soon as the first exits, so it may not print
    assert errors, result.stderr[-3000:]
    assert all(f"process {rank}: loss = nan" in line for line in errors)
    assert_stopped_before_saving(out, last_good=2)
