"""One way for tests to start several processes: `accelerate launch` on CPU ranks talking over gloo.

- No port is picked by the test. Picking a free port and handing it to the launcher is a check-then-use race (another
  test or program can take it in between). Instead a listening socket holds the configured port while the launch
  runs; accelerate then starts torchrun in standalone mode (its documented fallback for a busy port on one machine),
  whose rendezvous store binds port 0 itself and hands the bound port to the workers.
- The ranks never see a GPU (`CUDA_VISIBLE_DEVICES` blank, `DS_ACCELERATOR=cpu`): on a GPU host the comparison with a
  one-process CPU run would otherwise compare two devices.
- A DeepSpeed launch first builds DeepSpeed's CPU communication op once (a cold JIT build takes minutes on two cores),
  outside the launch's own time limit, so that limit measures the run and not the compiler.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
LAUNCH_TIMEOUT_S = 900  # a 2-process run on 2 shared cores, cold caches; the DeepSpeed op build is not counted
OP_BUILD_TIMEOUT_S = 1200


def cpu_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test environment for a launched rank: CPU only, one thread per rank, offline."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **(extra or {})}


def cpu_accelerate_config(name: str, directory: Path, num_processes: int = 2) -> Path:
    """A shipped accelerate config (`accelerate_configs/<name>.yaml`) changed only where CPU ranks need it: the
    process count, no mixed precision, and `use_cpu: false` (`true` would run one process, and would silently turn
    DeepSpeed off)."""
    config = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
    config.update(num_processes=num_processes, mixed_precision="no", use_cpu=False)
    path = directory / f"{name}_cpu{num_processes}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@functools.cache
def build_deepspeed_cpu_ops() -> None:
    """JIT-build DeepSpeed's shared-memory CPU communication op into the extension cache, once per test session."""
    code = "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
    done = subprocess.run(
        [sys.executable, "-c", code], env=cpu_environment(), capture_output=True, text=True, timeout=OP_BUILD_TIMEOUT_S
    )
    assert done.returncode == 0, f"building DeepSpeed's CPU ops failed:\n{done.stderr[-4000:]}"


def _uses_deepspeed(config: Path | None) -> bool:
    return config is not None and yaml.safe_load(config.read_text()).get("distributed_type") == "DEEPSPEED"


def accelerate_launch(
    script: Sequence[str],
    config: Path | None = None,
    *,
    launch_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = LAUNCH_TIMEOUT_S,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess:
    """``accelerate launch [--config_file config] [launch_args] script...`` on CPU ranks; fails the test on a non-zero
    exit with the end of the ranks' output. ``script`` is what follows the launcher's own arguments, e.g.
    ``["-m", "divalign.train", "recipe.yaml", "--max_steps", "2"]``."""
    if _uses_deepspeed(config):
        build_deepspeed_cpu_ops()
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if config is not None:
        command += ["--config_file", str(config)]
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        command += ["--main_process_port", str(held.getsockname()[1]), *launch_args, *script]
        result = subprocess.run(
            command, cwd=cwd, env=cpu_environment(env), capture_output=True, text=True, timeout=timeout
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def launch_train(recipe: Path, config: Path | None, flags: Sequence[str]) -> subprocess.CompletedProcess:
    """``divalign.train recipe flags`` on one CPU process (``config=None``) or as the accelerate ``config`` says.

    DDP needs the trainer on CPU to gather its metrics and token counts over gloo; DeepSpeed needs the trainer's
    ``use_cpu`` off, or it is silently disabled.
    """
    script = ["-m", "divalign.train", str(recipe), *flags]
    if config is None:
        return accelerate_launch(script, launch_args=["--num_processes", "1", "--cpu"])
    use_cpu = "false" if _uses_deepspeed(config) else "true"
    return accelerate_launch([*script, "--ddp_backend", "gloo", "--use_cpu", use_cpu], config)


def smoke_recipe_with(directory: Path, assets: Path, **keys) -> Path:
    """The smoke recipe on `assets` (divalign.smoke's model and data), 4 steps logged each step, no checkpoints, with
    `keys` on top, written to `directory`/recipe.yaml."""
    content = yaml.safe_load(SMOKE_RECIPE.read_text())
    content.update(model_name_or_path=str(assets / "model"), dataset_name=str(assets / "train.jsonl"))
    content.update({"save_strategy": "no", "max_steps": 4, "logging_steps": 1, **keys})
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return path
