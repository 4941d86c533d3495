"""Pipeline files for the tests: the tiny smoke stages on the fixture's model and data."""

from __future__ import annotations

from pathlib import Path

import yaml

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
