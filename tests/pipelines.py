"""Pipeline files for the tests (the tiny smoke stages on the fixture's model and data), and a launcher that stands in
for `accelerate launch`."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from divalign.pipeline import PipelineRunner, load_pipeline

REPO = Path(__file__).resolve().parents[1]
SMOKE_RECIPES = REPO / "recipes" / "smoke"
SFT_RECIPE = SMOKE_RECIPES / "sft_smoke.yaml"
TOFU_RECIPE = SMOKE_RECIPES / "tofu_smoke.yaml"


def reads_smoke_data(stage: object, assets: Path) -> None:
    """A stage of a shipped smoke recipe reads the fixture's data: the recipe names runs/smoke/train.jsonl, which a
    fresh clone does not have, and every stage's data is checked before anything runs."""
    if isinstance(stage, dict) and Path(str(stage.get("recipe", ""))).parent == SMOKE_RECIPES:
        overrides = stage.setdefault("overrides", {})
        if isinstance(overrides, dict):
            overrides.setdefault("dataset_name", str(assets / "train.jsonl"))


def write_pipeline(directory: Path, assets: Path, stages: list[dict] | None = None, **top) -> Path:
    """``directory/pipeline.yaml``: ``stages`` (default: sft then tofu, 4 steps each) from the fixture's base model,
    one CPU process per stage, outputs under ``directory/runs``."""
    content = {
        "name": "tiny",
        "output_root": str(directory / "runs"),
        "base_model": str(assets / "model"),
        "accelerate_config": None,
        "launch_args": ["--num_processes", "1", "--cpu"],
        "stages": stages
        if stages is not None
        else [
            {"name": "sft", "recipe": str(SFT_RECIPE), "overrides": {"max_steps": 4, "save_steps": 2}},
            {"name": "tofu", "recipe": str(TOFU_RECIPE), "overrides": {"max_steps": 4, "save_steps": 2}},
        ],
        **top,
    }
    for stage in content["stages"] if isinstance(content["stages"], list) else []:
        reads_smoke_data(stage, assets)
    path = directory / "pipeline.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


class CopyLauncher:
    """Stands in for `accelerate launch`: copies the input checkpoint's files into the output dir, then applies
    ``alter(output_dir, command)``, and exits with ``exit_status``."""

    def __init__(self, alter=None, exit_status: int = 0):
        self.alter = alter
        self.exit_status = exit_status
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, command: list[str], env: dict[str, str]) -> int:
        self.calls.append((command, env))
        source, output = Path(flag(command, "--model_name_or_path")), Path(flag(command, "--output_dir"))
        output.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file():
                shutil.copy(item, output / item.name)
        if self.alter is not None:
            self.alter(output, command)
        return self.exit_status

    @property
    def stages(self) -> list[str]:
        """The stages launched, in order (each launch's W&B job type)."""
        return [env["WANDB_JOB_TYPE"] for _, env in self.calls]


def run(path: Path, launcher, logs: list[str] | None = None, **kwargs):
    """Run the pipeline at ``path`` with ``launcher``; its log lines go to ``logs`` when given."""
    log = (logs if logs is not None else []).append
    return PipelineRunner(load_pipeline(path), launcher=launcher, log=log, **kwargs).run()
