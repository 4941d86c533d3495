"""Multi-node, on one host: the SLURM example's per-node launch (examples/slurm/node_launch.sh, which
examples/slurm/pipeline.sbatch runs on every node) started twice, as machine 0 and machine 1 of 2 machines x 1
process on 127.0.0.1 (gloo), trains the smoke recipe to the losses of 1 process. Slow: two launches, two ranks.

The rendezvous port is picked here (bound to port 0, then released): both machines must be told it in advance, so
the check-then-use race tests/launching.py avoids for one machine cannot be avoided for two.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from divalign.smoke import build_smoke_assets
from launching import REPO, cpu_environment

pytestmark = pytest.mark.slow

NODE_LAUNCH = REPO / "examples" / "slurm" / "node_launch.sh"
SMOKE_RECIPE = REPO / "recipes" / "smoke" / "tofu_smoke.yaml"
TIMEOUT_S = 1800


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return build_smoke_assets(tmp_path_factory.mktemp("smoke"))


def flags(assets: Path, output_dir: Path, batch: int) -> list[str]:
    values = {
        "model_name_or_path": assets / "model",
        "dataset_name": assets / "train.jsonl",
        "output_dir": output_dir,
        "per_device_train_batch_size": batch,
        "max_steps": 4,
        "logging_steps": 1,
        "save_strategy": "no",
    }
    return [part for key, value in values.items() for part in (f"--{key}", str(value))]


def losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def machine_environment(rank: int, port: int) -> dict[str, str]:
    """Machine 0 is told its place explicitly, machine 1 reads it from SLURM's variables, as under sbatch."""
    machine = {"NUM_MACHINES": "2", "MACHINE_RANK": str(rank), "PROCESSES_PER_MACHINE": "1"}
    if rank == 1:
        machine = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "GPUS_PER_NODE": "1"}
    rendezvous = {"MAIN_PROCESS_IP": "127.0.0.1", "MAIN_PROCESS_PORT": str(port), "ACCELERATE_CONFIG": "ddp"}
    return cpu_environment({**machine, **rendezvous})  # PATH: the interpreter's bin first (conftest)


def test_two_machines_of_one_process_train_like_one_process(assets, tmp_path):
    reference = tmp_path / "one"
    command = [sys.executable, "-m", "divalign.train", str(SMOKE_RECIPE), *flags(assets, reference, batch=8)]
    one = subprocess.run(command, env=cpu_environment(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert one.returncode == 0, one.stderr[-4000:]

    out = tmp_path / "two_machines"
    script = [str(NODE_LAUNCH), str(SMOKE_RECIPE), *flags(assets, out, batch=4)]
    script += ["--use_cpu", "true", "--ddp_backend", "gloo"]
    port = free_port()
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    machines = [subprocess.Popen(script, env=machine_environment(rank, port), **output) for rank in (0, 1)]
    try:
        outputs = [machine.communicate(timeout=TIMEOUT_S)[0] for machine in machines]
    finally:
        for machine in machines:
            if machine.poll() is None:
                machine.kill()
    for rank, (machine, output) in enumerate(zip(machines, outputs, strict=True)):
        assert machine.returncode == 0, f"machine {rank}:\n{output[-6000:]}"
        assert f"--num_processes 2 --num_machines 2 --machine_rank {rank} " in output  # the launch it printed
    assert len(losses(out)) == 4
    assert losses(out) == pytest.approx(losses(reference), rel=1e-4)
