"""`divalign train` launches for real (CPU ranks over gloo): a recipe's launcher keys relaunch it on 2 processes
through `accelerate launch`, with the losses of 1 process; `accelerate launch -m divalign.train` by hand still works,
and its rank does not relaunch although the recipe names 2 processes. Slow: each run starts its own processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from divalign.smoke import build_smoke_assets
from launching import accelerate_launch, cpu_environment, smoke_recipe_with

pytestmark = pytest.mark.slow

DIVALIGN = str(Path(sys.executable).parent / "divalign")  # the console script
TIMEOUT_S = 1800  # 2 processes on 2 shared cores, cold caches


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def divalign_train(recipe: Path, flags: list[str]) -> subprocess.CompletedProcess:
    """`divalign train RECIPE FLAGS` on CPU; a 2-process launch gets a port held busy, so accelerate's torchrun picks
    its own (tests/launching.py explains why no port is picked here)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        command = [DIVALIGN, "train", str(recipe), *flags, "--main_process_port", str(held.getsockname()[1])]
        result = subprocess.run(command, env=cpu_environment(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def losses(output_dir: Path) -> list[float]:
    return [entry["loss"] for entry in history(output_dir) if "loss" in entry]


@pytest.fixture(scope="module")
def one_process(assets, tmp_path_factory) -> Path:
    """The reference: the same recipe in this process (no launcher keys), the global batch of 8 on one process."""
    directory = tmp_path_factory.mktemp("one")
    recipe = smoke_recipe_with(directory, assets, per_device_train_batch_size=8)
    command = [DIVALIGN, "train", str(recipe), "--output_dir", str(directory / "out")]
    result = subprocess.run(command, env=cpu_environment(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "divalign train: launch" not in result.stdout  # in this process
    return directory / "out"


def test_recipe_launcher_keys_relaunch_on_two_processes_with_the_losses_of_one(assets, tmp_path, one_process):
    recipe = smoke_recipe_with(
        tmp_path, assets, per_device_train_batch_size=4, accelerate_config="ddp", num_processes=2
    )
    out = tmp_path / "out"
    result = divalign_train(recipe, ["--output_dir", str(out), "--use_cpu", "true", "--ddp_backend", "gloo"])
    assert "divalign train: launch: accelerate launch --config_file " in result.stdout
    # 64 rows: 4 steps x 4 rows x 2 processes = half an epoch; one process with 4 rows would be at a quarter
    assert history(out)[-1]["epoch"] == 0.5
    assert losses(out) == pytest.approx(losses(one_process), rel=1e-4)
    assert len(losses(out)) == 4


def test_accelerate_launch_by_hand_runs_the_recipe_once_without_relaunching(assets, tmp_path, one_process):
    """The recipe asks for 2 processes, but this launch has 1: the rank trains (in the launch's world), the recipe's
    launcher keys are not read again."""
    recipe = smoke_recipe_with(
        tmp_path, assets, per_device_train_batch_size=8, accelerate_config="ddp", num_processes=2
    )
    out = tmp_path / "out"
    script = ["-m", "divalign.train", str(recipe), "--output_dir", str(out)]
    result = accelerate_launch(script, launch_args=["--num_processes", "1", "--cpu"], timeout=TIMEOUT_S)
    assert "divalign train: launch" not in result.stdout + result.stderr
    assert history(out)[-1]["epoch"] == 0.5  # 4 steps x 8 rows on one process
    assert losses(out) == pytest.approx(losses(one_process), rel=1e-6)
