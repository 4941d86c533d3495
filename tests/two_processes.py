"""`accelerate launch` of `divalign.train` on two CPU processes (gloo), for the multi-process tests.

The accelerate configs are the shipped ones, changed only where a CPU needs it: two processes, no mixed precision,
and for DDP the GPU launcher with the gloo backend (`use_cpu: true` would run a single process, and for DeepSpeed it
silently disables DeepSpeed). The trainer's own `use_cpu` is on for DDP and off for DeepSpeed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# A cold DeepSpeed op build and two processes on two shared cores take minutes
LAUNCH_TIMEOUT_S = 900


def cpu_accelerate_config(name: str, directory: Path, num_processes: int = 2) -> Path:
    config = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
    config.update(num_processes=num_processes, mixed_precision="no", use_cpu=False)
    path = directory / f"{name}_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(recipe: Path, config: Path | None, flags: list[str]) -> None:
    """Run ``divalign.train recipe flags`` on one CPU process (``config=None``) or as ``config`` says."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if config is None:
        command = [*launcher, "--num_processes", "1", "--cpu", "-m", "divalign.train", str(recipe), *flags]
    else:
        command = [*launcher, "--config_file", str(config), "-m", "divalign.train", str(recipe), *flags]
        # DDP needs the trainer on CPU to gather its metrics and token counts over gloo; DeepSpeed needs it off,
        # or it is silently disabled
        use_cpu = "false" if "zero" in config.name else "true"
        command += ["--ddp_backend", "gloo", "--use_cpu", use_cpu]
    # No GPU even on a GPU host: every compared run must use the same device
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-4000:]
