"""The Python API a training script of one's own uses: `from divalign import ...` (loaded on first use), and the
README's example adding the diversity callback to a plain TRL `SFTTrainer`, run as written on this machine's tiny
model, data and CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import pytest

from divalign.smoke import build_smoke_assets, prompt_completion_rows, write_jsonl
from wandb_records import offline_runs

REPO = Path(__file__).resolve().parents[1]


def test_the_names_a_training_script_needs_load_on_first_use():
    code = textwrap.dedent(
        """
        import sys
        import divalign
        assert "trl" not in sys.modules, "import divalign must stay light"
        from divalign import (DiversityCallback, DiversityConfig, DivGRPOConfig, DivGRPOTrainer, GEMConfig, GEMTrainer,
                              TOFUConfig, TOFUTrainer, compute_diversity)
        from divalign.diversity import compute_diversity as metrics
        from divalign.callback import DiversityCallback as Callback
        from divalign.trainers.grpo_trainer import DivGRPOTrainer as GRPO
        from trl import GRPOTrainer, SFTTrainer
        from transformers import TrainerCallback
        assert DiversityCallback is Callback and compute_diversity is metrics and DivGRPOTrainer is GRPO
        assert issubclass(DiversityCallback, TrainerCallback) and issubclass(DivGRPOTrainer, GRPOTrainer)
        assert issubclass(TOFUTrainer, SFTTrainer) and issubclass(GEMTrainer, SFTTrainer)
        assert {"DiversityCallback", "DiversityConfig", "DivGRPOTrainer", "compute_diversity"} <= set(divalign.__all__)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    "argv", [["--help"], ["eval", "--help"], ["plot", "--help"], ["pipeline", "--help"], ["compare", "--help"]]
)
def test_divalign_help_loads_no_torch_or_transformers(argv):
    """The subcommands import their heavy libraries when they run, not to register their flags: `divalign --help`
    answers without torch, transformers, datasets or TRL, and so without their offline-mode notices on stderr."""
    code = textwrap.dedent(
        f"""
        import sys
        from divalign.cli import main
        try:
            main({argv!r})
        except SystemExit as done:
            assert done.code == 0, done.code
        heavy = [name for name in ("torch", "transformers", "datasets", "trl", "peft") if name in sys.modules]
        assert heavy == [], heavy
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "" and "usage: divalign" in result.stdout


def readme_example() -> str:
    """The README's ```python block that adds the DiversityCallback to a TRL trainer."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    (example,) = [block for block in blocks if "DiversityCallback(" in block]
    return example


# What the README example names that this machine has instead: a local tiny model, and a CPU run of 3 steps
HERE_INSTEAD = {
    '"Qwen/Qwen2.5-0.5B-Instruct"': "MODEL",
    'SFTConfig(output_dir="runs/sft", ': 'SFTConfig(output_dir="runs/sft", use_cpu=True, max_steps=3, ',
}


def test_the_readme_example_runs_with_a_plain_sft_trainer(tmp_path, monkeypatch):
    import wandb

    assets = build_smoke_assets(tmp_path / "assets")
    write_jsonl(
        tmp_path / "probe.jsonl", [{"prompt": [{"role": "user", "content": f"say a word w{i}"}]} for i in (1, 2)]
    )
    code = readme_example()
    for theirs, ours in HERE_INSTEAD.items():
        assert theirs in code, f"the README example changed: {theirs!r} is gone"
        code = code.replace(theirs, ours)
    offline = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    for name, value in {**offline, "WANDB_X_DISABLE_STATS": "true", "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    namespace = {"MODEL": str(assets / "model"), "dataset": datasets.Dataset.from_list(prompt_completion_rows(24))}
    try:
        exec(compile(code, "README.md example", "exec"), namespace)
    finally:
        wandb.finish()
        wandb.teardown()

    trainer = namespace["trainer"]
    assert trainer.state.global_step == 3
    history = [e for e in trainer.state.log_history if "diversity/distinct_1" in e]
    assert [e["step"] for e in history] == [0, 3]  # the starting model, then the last step
    samples = (tmp_path / "runs" / "sft" / "diversity_samples.jsonl").read_text().splitlines()
    # every evaluation's samples, 2 prompts x 8 samples each
    assert [json.loads(line)["step"] for line in samples] == [0] * 2 * 8 + [3] * 2 * 8
    (run,) = offline_runs(tmp_path)
    assert [row["train/global_step"] for row in run.rows_with("diversity/sbert")] == [0, 3]
    assert run.config["loss"] == "ce"


@pytest.fixture(autouse=True)
def _no_pipeline_offset(monkeypatch):
    monkeypatch.delenv("DIVALIGN_PIPELINE_STEP_OFFSET", raising=False)
